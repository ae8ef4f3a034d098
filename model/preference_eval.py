"""The gate's figures about taste: how well a model separates held-out liked from disliked jokes,
and how varied its samples are.

- `vote_separation`: over every (liked, disliked) pair of held-out voted jokes, the share where
  the liked joke gets the higher score (ties count half): the area under the ROC curve, 0.5 =
  no separation. A joke's score is its length-normalised log-likelihood ratio to a fixed
  reference model (the base model by default): the mean log-probability per completion token
  under the model, minus the same under the reference, each after the joke's prompt in the
  `plain` layout (`<start> prompt completion <eos>`, what a trained version serves). The ratio
  takes out what makes a joke likely to any model (length, common words), so what is left is
  what training added; the base itself scores 0 on every joke (separation 0.5).
- `vote_separation_se`: its standard error (Hanley & McNeil 1982), from which the gate's
  tolerance comes: with 10 liked and 10 disliked held-out jokes it is about 0.13.
- `distinct_2`: distinct word bigrams / all word bigrams over the samples (lower-cased): a model
  that tells one joke again and again scores near 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from model.contracts.preferences import VotedJoke

SCORE_TOKENS = 2048  # padded tokens per batch when scoring


def completion_ids(tokenizer, joke: VotedJoke) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids + eos) in the `plain` layout, as the runner tokenises."""
    from model.textformat import prompt_ids

    completion = tokenizer(joke.completion, add_special_tokens=False).input_ids
    return prompt_ids(tokenizer, joke.prompt), [*completion, tokenizer.eos_token_id]


def completion_scores(model, tokenizer, jokes: Sequence[VotedJoke]) -> list[float]:
    """Mean log-probability per completion token of each joke after its prompt."""
    import torch

    rows = [completion_ids(tokenizer, joke) for joke in jokes]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    scores = [0.0] * len(rows)
    model.eval()
    start = 0
    with torch.inference_mode():
        while start < len(order):
            end = start + 1
            while end < len(order) and (end + 1 - start) * sum(map(len, rows[order[end]])) <= (
                SCORE_TOKENS
            ):
                end += 1
            chunk = order[start:end]
            start = end
            width = max(len(rows[i][0]) + len(rows[i][1]) for i in chunk)
            input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, i in enumerate(chunk):
                prompt, completion = rows[i]
                ids = [*prompt, *completion]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
                scored[row, len(prompt) : len(ids)] = True
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            targets = input_ids[:, 1:].to(device)
            token_logprobs = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            weights = scored[:, 1:].to(device)
            totals = (token_logprobs * weights).sum(-1) / weights.sum(-1)
            for row, i in enumerate(chunk):
                scores[i] = float(totals[row])
    return scores


def separation(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float | None, int]:
    """(share of liked/disliked pairs where the liked joke scores higher, ties half; pairs).
    None when there is no pair (no liked or no disliked joke)."""
    liked = [s for s, label in zip(scores, labels, strict=True) if label]
    disliked = [s for s, label in zip(scores, labels, strict=True) if not label]
    pairs = len(liked) * len(disliked)
    if not pairs:
        return None, 0
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in liked for b in disliked)
    return wins / pairs, pairs


def separation_se(share: float, liked: int, disliked: int) -> float:
    """Standard error of a separation (an AUC) from `liked` x `disliked` pairs (Hanley-McNeil)."""
    if liked < 1 or disliked < 1:
        return 0.0
    q1 = share / (2 - share)
    q2 = 2 * share * share / (1 + share)
    variance = (
        share * (1 - share) + (liked - 1) * (q1 - share**2) + (disliked - 1) * (q2 - share**2)
    ) / (liked * disliked)
    return math.sqrt(max(0.0, variance))


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over `texts` (0 when there are none)."""
    grams = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def vote_figures(
    model, tokenizer, held_out: Sequence[VotedJoke], reference: Sequence[float]
) -> dict[str, Any]:
    """The gate's vote figures of one model on the held-out voted jokes (`reference`: their
    scores under the reference model, in the same order)."""
    scores = completion_scores(model, tokenizer, held_out) if held_out else []
    ratios = [s - r for s, r in zip(scores, reference, strict=True)]
    labels = [bool(joke.label) for joke in held_out]
    share, pairs = separation(ratios, labels)
    liked, disliked = sum(labels), len(labels) - sum(labels)
    return {
        "vote_separation": share,
        "vote_separation_se": None if share is None else separation_se(share, liked, disliked),
        "vote_pairs": pairs,
        "held_out_liked": liked,
        "held_out_disliked": disliked,
    }
