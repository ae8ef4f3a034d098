"""Validation and duplicate keys (what /addjoke and `jokebot import` accept), and whether
generated text reads as one joke."""

import pytest

from model.contracts.jokes import (
    MAX_JOKE_CHARS,
    check_joke,
    is_one_joke,
    normalise_key,
    reads_as_joke,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Why did the chicken cross the road?", "why did the CHICKEN cross the road"),
        ("Ｆｕｌｌ ｗｉｄｔｈ joke!", "full width joke"),
        ("Spaces\t\tand\nnewlines ", "spaces and newlines"),
        ("It’s a “quote”…", "it s a quote"),
        ("zero\u200bwidth", "zerowidth"),
    ],
)
def test_equivalent_jokes_share_a_key(a, b):
    assert normalise_key(a) == normalise_key(b)


def test_different_jokes_have_different_keys():
    assert normalise_key("I like cats") != normalise_key("I like dogs")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (None, "empty"),
        ("bell\x07 joke", "control"),
        ("x" * (MAX_JOKE_CHARS + 1), "too_long"),
        ("<@123456> <@&42> @everyone", "no_words"),
        ("https://example.com/joke", "no_words"),
        ("!!! ???", "no_words"),
        ("ha", "too_short"),
    ],
)
def test_bad_jokes_are_refused_with_a_reason(raw, kind):
    check = check_joke(raw)
    assert not check.ok
    assert check.kind == kind
    assert check.reason and check.reason[0].isupper()


def test_whitespace_is_folded_before_the_length_limit():
    text = "word " * 50 + " " * 200  # 250 chars of words, padded with spaces
    check = check_joke(text.replace(" ", "   "))
    assert check.ok
    assert check.text == ("word " * 50).strip()


def test_valid_joke_keeps_its_text():
    check = check_joke("  I used to hate facial hair,\nbut then it grew on me.  ")
    assert check.ok
    assert check.text == "I used to hate facial hair, but then it grew on me."
    assert check.key == "i used to hate facial hair but then it grew on me"


def test_a_joke_that_mentions_someone_is_still_a_joke():
    assert check_joke("<@123> walks into a bar and orders a pun").ok


def test_reads_as_joke():
    assert reads_as_joke("I used to hate facial hair, but then it grew on me.")
    assert reads_as_joke('"Knock knock." "Who is there?" "Nobody."')
    for text in (
        "-_mean(a, b, c).",
        "USB talking point:",
        "def f(x): return x",
        "Too short.",
        "lowercase start is not a sentence.",
        "A\nB\nC three lines of text here.",
        "$$x^2 + y^2 = z^2$$ is a proof.",
    ):
        assert not reads_as_joke(text), text


def test_generated_text_reads_as_one_joke_on_one_line():
    """The one rule /joke and the gate share; a second line is a second joke."""
    assert reads_as_joke("I used to hate facial hair, but then it grew on me.")
    assert reads_as_joke("  Why did the duck cross the road? To prove he was no chicken!\n")
    assert not reads_as_joke("Why did the duck cross the road?\nTo prove he was no chicken!")
    assert not reads_as_joke("Why did the duck cross the road?\r To prove it.")
    assert not reads_as_joke("x" * 10 + ".")  # one word
    assert not reads_as_joke("A duck walks into a bar " * 12 + ".")  # over 280 characters


def test_one_joke_is_a_shape_and_reading_as_a_joke_adds_the_sentence():
    """The gate counts the shape; /joke also prefers text that reads like a sentence."""
    mid_sentence = " landowners can reboot their computers and solve complex problems."
    assert is_one_joke(mid_sentence) and not reads_as_joke(mid_sentence)
    assert not is_one_joke("Why did the duck cross the road?\nTo prove he was no chicken!")
    assert not is_one_joke("Too short")
    assert not is_one_joke("x" * (MAX_JOKE_CHARS + 1))
    assert not reads_as_joke("def joke(): return 'the punchline'")
