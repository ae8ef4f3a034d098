"""The versions chart as a Discord attachment, drawn in a worker thread (the bot keeps serving)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence

import discord

from bot.services import Services
from bot.store.database import ModelVersion
from bot.training.chart import FILENAME, versions_chart
from model.contracts.votes import CommunityScore


async def chart_file(
    versions: Sequence[ModelVersion], scores: dict[int, CommunityScore]
) -> discord.File:
    png = await asyncio.to_thread(versions_chart, versions, scores)
    return discord.File(io.BytesIO(png), filename=FILENAME)


async def versions_chart_file(services: Services) -> discord.File:
    """The chart of every version as the database has it now."""
    return await chart_file(await services.db.versions(), await services.community.version_scores())
