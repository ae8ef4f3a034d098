"""How /joke samples by default: one source for the bot's settings, the runner's requests and
the trainer's sample-based gate (which must judge a version as it will be served)."""

from __future__ import annotations

DEFAULT_TEMPERATURE = 0.9
DEFAULT_TOP_P = 0.95
