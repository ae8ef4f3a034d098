"""Slash commands and buttons, one cog per feature (as RoboDanny's `cogs/`): `jokes` (/joke,
/addjoke), `votes` (the buttons under a joke), `moderation` (/report, /review, /deljoke,
/forgetme), `admin` (/retrain, /cancel, /rollback, /models) and `status`.

Cogs import the rest of `discord_app` and the rooms below; nothing but `client` imports a cog.
"""
