"""How a joke is laid out in tokens: the one contract shared by training, evaluation and serving.

Every training example is `<start> joke <eos>`; every generation starts from `<start> prompt`
and stops at `<eos>`. `<start>` is the document separator the model saw in pre-training:
`<|endoftext|>` where the vocabulary has it (GPT-2, SmolLM, Qwen), else the bos token (Llama,
Mistral), else eos. So an empty prompt still has a first token, a joke begins like a fresh
document, and the model learns that it ends with eos. This is what keeps jokes from running
into each other, the flaw of the 2019 tutorial. (For the embedded SmolLM2-Instruct, whose bos
is the chat marker `<|im_start|>`, starting from `<|endoftext|>` lowers the base model's NLL on
jokes from 4.54 to 4.21 nats per token.)
"""

from __future__ import annotations

DOCUMENT_SEPARATOR = "<|endoftext|>"


def start_token_id(tokenizer) -> int:
    """The token every joke follows."""
    separator = tokenizer.convert_tokens_to_ids(DOCUMENT_SEPARATOR)
    if separator is not None and tokenizer.convert_ids_to_tokens(separator) == DOCUMENT_SEPARATOR:
        return separator
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id


def prompt_ids(tokenizer, prompt: str = "") -> list[int]:
    """Token ids a generation starts from: the start token, then the prompt (the joke's opening)."""
    ids = tokenizer(prompt, add_special_tokens=False).input_ids if prompt else []
    return [start_token_id(tokenizer), *ids]


def example_ids(tokenizer, joke: str) -> list[int]:
    """Token ids of one training example: start token, the joke, eos."""
    return [*prompt_ids(tokenizer, joke), tokenizer.eos_token_id]
