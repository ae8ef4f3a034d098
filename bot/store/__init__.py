"""The store: the database behind one interface (`backends`: SQLite through aiosqlite, or
PostgreSQL through asyncpg when `DATABASE_URL` says so), the bot's tables (`database`) and the
community's (`community`: shown jokes, votes, reports, reviews), the numbered migrations for
each engine in `migrations/`, backups and restores of the SQLite file (`backup`), moving onto
PostgreSQL (`copy`), and what several processes on one PostgreSQL share: one leader for the
schedule (`leader`) and news of a promotion (`notify`).

The bottom room of the bot: it imports only `model/contracts` and knows no rules (callers pass
the thresholds and statuses their rules decide). Every other room may use it.
"""
