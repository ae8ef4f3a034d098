"""The Discord face: the discord.py client, one cog per feature (`commands/`), safe replies,
admin checks, gateway shards and the wording of `/status`.

The only room that imports discord. It may import every room below it (`services`,
`training`, `runners`, `community`, `store`) and `settings`; only the entry points (`app`,
`sandbox`) import it. Not named `discord`, so that `import discord` always means discord.py.
"""
