"""The sampler on fixed logits: top-p and temperature, the nucleus, and each row's own generator."""

from __future__ import annotations

import pytest
import torch

from model.sampler import (
    RowSampling,
    choose_tokens,
    make_generator,
    nucleus_threshold,
    row_sampling,
)


def test_sampling_respects_top_p_and_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    rows = [
        RowSampling(0.0, 1.0, None),
        RowSampling(1.0, 0.5, make_generator(0)),  # nucleus = the top token alone
        RowSampling(1.0, 0.75, make_generator(0)),  # nucleus = the top two tokens
    ]
    seen = [set(), set(), set()]
    for _ in range(200):
        for i, tok in enumerate(choose_tokens(logits, rows)):
            seen[i].add(tok)
    assert seen == [{0}, {0}, {0, 1}]
    # a wide distribution: top-k misses top_p, the wider search must find the nucleus (2191 tokens)
    wide = -torch.arange(5000, dtype=torch.float32)[None, :] * 1e-4
    row = [RowSampling(1.0, 0.5, make_generator(1))]
    picks = {choose_tokens(wide, row)[0] for _ in range(400)}
    assert len(picks) > 200 and max(picks) <= 2191


@pytest.mark.parametrize("spread", [0.01, 1.0, 4.0, 12.0])
def test_nucleus_is_the_smallest_top_set_reaching_top_p(spread):
    torch.manual_seed(int(spread * 100))
    logp = torch.log_softmax(torch.randn(4, 50257) * spread, dim=-1)
    top_p = torch.tensor([0.3, 0.9, 0.95, 0.999])
    threshold = nucleus_threshold(logp.exp(), logp, top_p)
    for row in range(4):
        probs = logp[row].exp().double()
        kept = probs[probs >= threshold[row]]
        assert (probs[probs < threshold[row]] <= kept.min()).all()  # a top set
        assert kept.sum() >= top_p[row] - 1e-5  # reaches top_p
        assert kept.sum() - kept.min() < top_p[row] + 1e-5  # and is the smallest that does
    assert (nucleus_threshold(logp.exp(), logp, torch.ones(4)) == 0).all()


def test_a_rows_tokens_depend_only_on_its_logits_and_seed():
    """Fixed logits, so no forward pass is involved: a seeded row draws the same tokens alone
    and at any place in batches of other rows (greedy, other seeds, other settings), for both
    ways of finding the nucleus (within the top-k, and the wider search)."""
    torch.manual_seed(0)
    vocab = 600
    ours = torch.randn(vocab) * 2.0
    others = torch.randn(5, vocab) * 3.0
    settings = [(0.9, 0.95), (1.3, 1.0), (0.7, 0.5)]  # top_p 1.0: the wider search

    def draws(temperature: float, top_p: float, place: int | None, steps: int = 40) -> list[int]:
        mine = row_sampling(temperature, top_p, seed=42, index=1)
        neighbours = [
            row_sampling(0.0, 1.0, seed=None, index=0),
            row_sampling(1.1, 0.9, seed=7, index=0),
            row_sampling(0.8, 1.0, seed=None, index=3),
        ]
        picks = []
        for _ in range(steps):
            if place is None:
                picks.append(choose_tokens(ours[None, :], [mine])[0])
                continue
            rows = [*neighbours[:place], mine, *neighbours[place:]]
            logits = torch.cat([others[:place], ours[None, :], others[place : len(neighbours)]])
            picks.append(choose_tokens(logits, rows)[place])
        return picks

    for temperature, top_p in settings:
        alone = draws(temperature, top_p, None)
        assert len(set(alone)) > 1  # really sampling
        for place in (0, 1, 3):
            assert draws(temperature, top_p, place) == alone, (temperature, top_p, place)
    other_seed = row_sampling(0.9, 0.95, seed=43, index=1)
    assert [choose_tokens(ours[None, :], [other_seed])[0] for _ in range(40)] != draws(
        0.9, 0.95, None
    )


def test_choice_index_offsets_the_seed_and_greedy_rows_have_no_generator():
    assert row_sampling(0.0, 0.9, seed=5, index=2).generator is None
    a = row_sampling(1.0, 1.0, seed=5, index=2).generator
    b = row_sampling(1.0, 1.0, seed=7, index=0).generator
    assert torch.rand(3, generator=a).tolist() == torch.rand(3, generator=b).tolist()
    unseeded = [row_sampling(1.0, 1.0, seed=None, index=0).generator for _ in range(2)]
    assert torch.rand(1, generator=unseeded[0]) != torch.rand(1, generator=unseeded[1])
