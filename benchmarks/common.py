"""What several benchmarks share (run them from the project root: `python benchmarks/X.py`)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def add_data_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--data-dir`: where the embedded model is converted once, as jokebot does it."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("JOKEBOT_DATA_DIR", ROOT / "data")),
        help="where the embedded model is converted once (default: JOKEBOT_DATA_DIR or ./data)",
    )
