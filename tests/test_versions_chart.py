"""The versions chart: a real PNG with one point per served version, drawn from the store's rows."""

from __future__ import annotations

import io

from matplotlib.image import imread

from bot.store.database import ModelVersion
from bot.training.chart import held_out_nll, versions_chart
from model.contracts.votes import CommunityScore


def _version(number, status, *, active=False, parent=None, metrics=None):
    return ModelVersion(
        version=number,
        path=f"/models/v{number}",
        parent_version=parent,
        created_at="2026-12-01 10:00:00",
        status=status,
        active=active,
        metrics=metrics or {},
    )


VERSIONS = [
    _version(0, "base"),
    _version(1, "promoted", parent=0, metrics={"serving": {"nll": 4.5}, "candidate": {"nll": 3.6}}),
    _version(2, "rejected", parent=1, metrics={"serving": {"nll": 3.6}, "candidate": {"nll": 3.7}}),
    _version(3, "promoted", active=True, parent=1, metrics={"candidate": {"nll": 3.4}}),
]


def test_held_out_nll_of_the_base_comes_from_its_first_childs_gate():
    assert held_out_nll(VERSIONS[0], VERSIONS) == 4.5
    assert held_out_nll(VERSIONS[3], VERSIONS) == 3.4
    assert held_out_nll(_version(5, "promoted"), VERSIONS) is None


def test_chart_is_a_png_of_the_versions_that_served():
    scores = {0: CommunityScore(up=3, down=7), 3: CommunityScore(up=40, down=10)}
    png = versions_chart(VERSIONS, scores)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    height, width, _ = imread(io.BytesIO(png)).shape
    assert (width, height) == (640, 480)


def test_chart_without_votes_or_metrics_still_draws():
    assert versions_chart([_version(0, "base", active=True)], {}).startswith(b"\x89PNG")


def test_score_interval_brackets_the_share():
    score = CommunityScore(up=8, down=2)
    low, high = score.interval
    assert low < score.share < high <= 1 and low == score.lower_bound
