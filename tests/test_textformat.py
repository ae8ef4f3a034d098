"""The token layout shared by training, evaluation and serving."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from model.loading import load_tokenizer
from model.textformat import example_ids, prompt_ids, start_token_id


def word_tokenizer(vocab: list[str], **special) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", **special)


def test_gpt2_jokes_sit_between_endoftext_tokens(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    assert start_token_id(tokenizer) == 50256
    assert prompt_ids(tokenizer, "") == [50256]
    assert example_ids(tokenizer, "Hello world") == [50256, 15496, 995, 50256]


@pytest.mark.parametrize(
    ("special", "expected"),
    [
        ({"bos_token": "<s>", "eos_token": "</s>"}, "<s>"),  # Llama-style: bos
        ({"eos_token": "</s>"}, "</s>"),  # no bos: eos
        ({"bos_token": "<im>", "eos_token": "</s>"}, "<|endoftext|>"),  # separator wins
    ],
)
def test_start_token_prefers_the_document_separator(special, expected):
    vocab = ["<unk>", "<s>", "</s>", "<im>", "hello", "world"]
    if expected == "<|endoftext|>":
        vocab.append("<|endoftext|>")
    tokenizer = word_tokenizer(vocab, **special)
    assert tokenizer.convert_ids_to_tokens(start_token_id(tokenizer)) == expected
    ids = example_ids(tokenizer, "hello world")
    assert ids[0] == start_token_id(tokenizer) and ids[-1] == tokenizer.eos_token_id
