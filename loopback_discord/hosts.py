"""Where discord.py connects: Discord's own hosts, a REST/gateway proxy, or this stand-in.

discord.py keeps its REST base and gateway URL on classes, so this changes them for the whole
process. The bot calls it with `DISCORD_API_BASE` / `DISCORD_GATEWAY_URL`; the harness with the
stand-in's addresses (and puts the previous ones back afterwards).
"""

from __future__ import annotations

from typing import Any


def point_discord_at(api_base: str, gateway_url: Any) -> tuple[str, Any]:
    """Send discord.py's REST calls to `api_base` and its gateway to `gateway_url` (a string
    or URL); returns the hosts it used before, to pass back here when done."""
    import discord  # here, not at import: the stand-in itself runs without discord.py
    import yarl

    before = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(str(gateway_url))
    return before
