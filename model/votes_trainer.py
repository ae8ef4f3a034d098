"""TRL's KTOTrainer, with a 👎 joke learnt without its end-of-joke token.

KTO (and APO-zero) lowers the likelihood of an undesirable example's whole completion, the
token that ends it included. When most shown jokes are voted down (a community that likes a
rarer kind of joke), every complete, well-ended joke among them teaches the model that ending
a joke is bad, and it starts to ramble: in `benchmarks/bench_taste.py` (a community that likes
jokes with a number, 80% of jokes voted down) the one-joke rate of the new version fell from
100% to 79%. Left without its terminator, a 👎 lowers the joke's words, not its ending; a 👍
joke keeps its terminator, so liked jokes still teach where a joke ends.
"""

from __future__ import annotations

from trl import KTOTrainer


class VotesKTOTrainer(KTOTrainer):
    """A KTOTrainer whose undesirable completions end before their eos token."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        eos = getattr(processing_class, "eos_token_id", None)
        if eos is None:
            return dataset
        return dataset.map(without_terminator, fn_kwargs={"eos": eos})


def without_terminator(example: dict, eos: int) -> dict:
    """An undesirable example's completion without its final eos (a desirable one unchanged)."""
    ids = example["completion_ids"]
    if not example["label"] and len(ids) > 1 and ids[-1] == eos:
        example["completion_ids"] = ids[:-1]
    return example
