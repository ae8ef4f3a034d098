"""How a joke is laid out in tokens: the one contract shared by training, evaluation and serving.

Every training example is `<start> joke <eos>`; every generation starts from `<start> prompt`
and stops at `<eos>`. `<start>` is the document separator the model saw in pre-training:
`<|endoftext|>` where the vocabulary has it (GPT-2, SmolLM, Qwen), else the bos token (Llama,
Mistral), else eos. So an empty prompt still has a first token, a joke begins like a fresh
document, and the model learns that it ends with eos. This is what keeps jokes from running
into each other, the flaw of the 2019 tutorial. (For the embedded SmolLM2-Instruct, whose bos
is the chat marker `<|im_start|>`, starting from `<|endoftext|>` lowers the base model's NLL on
jokes from 4.54 to 4.21 nats per token.)

Two prompt layouts:

- `plain` (`<start> prompt`): for versions fine-tuned on jokes, which know where a joke ends.
- `few-shot` (`<start> joke \n joke \n ... joke \n prompt`): for a model that was never
  fine-tuned on jokes (v0, any `MODEL_BASE`). A few corpus jokes as in-context examples, one per
  line, show it what a joke looks like and that a line ends one, so its continuation is one
  joke; generation stops at the newline (as well as at eos and the start token). The separator
  is a newline, not the start token: after `<|endoftext|>` a pre-trained model starts an
  unrelated document (measured on SmolLM2-135M: 8% one-joke rate with `<|endoftext|>` between
  examples, 88-96% with newlines, by the looser one-line rule the gate used then).

A version folder's `manifest.json` names its layout (`prompt_layout`); a folder without one
(a base model, a hub id) wants `few-shot`. This module is torch-free: the bot may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DOCUMENT_SEPARATOR = "<|endoftext|>"
PLAIN = "plain"
FEW_SHOT = "few-shot"
PROMPT_LAYOUTS = (PLAIN, FEW_SHOT)
FEW_SHOT_SEPARATOR = "\n"  # between in-context examples; a generation stops at it


def start_token_id(tokenizer) -> int:
    """The token every joke follows."""
    separator = tokenizer.convert_tokens_to_ids(DOCUMENT_SEPARATOR)
    if separator is not None and tokenizer.convert_ids_to_tokens(separator) == DOCUMENT_SEPARATOR:
        return separator
    bos = tokenizer.bos_token_id
    return bos if bos is not None else tokenizer.eos_token_id


def stop_token_ids(tokenizer) -> frozenset[int]:
    """Tokens that end a joke: eos, and the start token (a second start would be a second joke).
    The engine stops a row at them, in serving and in the gate's samples alike."""
    return frozenset({tokenizer.eos_token_id, start_token_id(tokenizer)})


def _text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids if text else []


def prompt_ids(tokenizer, prompt: str = "") -> list[int]:
    """Token ids a generation starts from: the start token, then the prompt (the joke's opening)."""
    return [start_token_id(tokenizer), *_text_ids(tokenizer, prompt)]


def few_shot_text(examples: Sequence[str], prompt: str = "") -> str:
    """The in-context examples, one per line, then the prompt (the new joke's opening)."""
    return "".join(f"{example}{FEW_SHOT_SEPARATOR}" for example in examples) + prompt


def layout_stops(layout: str) -> tuple[str, ...]:
    """Stop strings a layout adds to a generation (few-shot: the end of the line)."""
    return (FEW_SHOT_SEPARATOR,) if layout == FEW_SHOT else ()


def generation_prompt_ids(
    tokenizer, prompt: str = "", examples: Sequence[str] = (), layout: str = PLAIN
) -> list[int]:
    """The prompt in the layout the serving model wants (`plain` ignores the examples)."""
    if layout == FEW_SHOT and examples:
        prompt = few_shot_text(examples, prompt)
    return prompt_ids(tokenizer, prompt)


def example_ids(tokenizer, joke: str) -> list[int]:
    """Token ids of one training example: start token, the joke, eos."""
    return [*prompt_ids(tokenizer, joke), tokenizer.eos_token_id]


def prompt_layout(manifest: dict[str, Any] | None) -> str:
    """The layout a version wants: its manifest's `prompt_layout`; a version trained before the
    field existed (it has a `token_layout`) is `plain`; no manifest at all means `few-shot`."""
    manifest = manifest or {}
    layout = manifest.get("prompt_layout")
    if layout in PROMPT_LAYOUTS:
        return layout
    return PLAIN if manifest.get("token_layout") else FEW_SHOT
