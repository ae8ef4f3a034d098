"""The store: the SQLite database (aiosqlite, WAL), the community's tables (shown jokes, votes,
reports, reviews) and the numbered migrations in `migrations/`.

The bottom room of the bot: it imports only `model/contracts` and knows no rules (callers pass
the thresholds and statuses their rules decide). Every other room may use it.
"""
