"""How a joke is laid out in tokens: the one contract shared by training, evaluation and serving.

Every training example is `<start> joke <eos>`; every generation starts from `<start> prompt`
and stops at `<eos>`. `<start>` is the tokenizer's bos token, or its eos token where there is
no bos (GPT-2), so that an empty prompt still has a first token and the model has learnt that
a joke follows the start token and ends with eos. This is what keeps jokes from running into
each other, the flaw of the 2019 tutorial.
"""

from __future__ import annotations


def start_token_id(tokenizer) -> int:
    """The token every joke follows."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id


def prompt_ids(tokenizer, prompt: str = "") -> list[int]:
    """Token ids a generation starts from: the start token, then the prompt (the joke's opening)."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
    return [start_token_id(tokenizer), *ids]


def example_ids(tokenizer, joke: str) -> list[int]:
    """Token ids of one training example: start token, the joke, eos."""
    return [*prompt_ids(tokenizer, joke), tokenizer.eos_token_id]
