"""The repetition guard inside JSON strings (app/engine/string_guard.py): lexing across tokens, n-grams per string."""

from app.engine.sampling import RowSampler, SamplingParams
from app.engine.string_guard import INSIDE, OUTSIDE, StringGuard, TokenTexts

# a toy vocabulary: whole words and JSON punctuation, some tokens spanning a string's end and the next one's start
VOCAB = ['{"', "setup", '": "', " a", " cat", " is", ",", '", "', "punch", '"}', '\\"', "x", '"']
T = {text: i for i, text in enumerate(VOCAB)}


def feed(guard: StringGuard, *texts: str) -> None:
    for text in texts:
        guard.accept(T[text])


def test_repeated_ngram_inside_a_string_is_banned():
    guard = StringGuard(TokenTexts(VOCAB), n=4)
    feed(guard, '{"', "setup", '": "', " a", " cat", " is", " a", " cat", " is")
    assert guard.state == INSIDE
    assert guard.banned() == [T[" a"]]  # " a cat is" was followed by " a" before in this string
    feed(guard, ",")
    assert guard.banned() == []


def test_keys_separators_and_other_strings_are_never_touched():
    guard = StringGuard(TokenTexts(VOCAB), n=2)
    feed(guard, '{"', "setup", '": "', " cat", " cat")
    assert guard.banned() == [T[" cat"]]
    feed(guard, '", "')  # closes the value and opens the next key in one token
    assert guard.state == INSIDE and guard.banned() == []  # a new string: nothing seen yet
    feed(guard, "punch", '": "', " cat")
    assert guard.banned() == []  # " cat" " cat" was seen in another string
    feed(guard, '"}')
    assert guard.state == OUTSIDE and guard.banned() == []


def test_escaped_quotes_stay_inside_the_string():
    guard = StringGuard(TokenTexts(VOCAB), n=2)
    feed(guard, '{"', "x", '\\"', "x")
    assert guard.state == INSIDE
    assert guard.banned() == [T['\\"']]  # "x" was followed by \" before


def test_the_sampler_excludes_banned_tokens_unless_nothing_else_is_allowed():
    import torch

    guard = StringGuard(TokenTexts(VOCAB), n=2)
    feed(guard, '{"', " cat", " cat")
    sampler = RowSampler.create(SamplingParams(8, temperature=0), guard=guard)
    logits = torch.zeros(len(VOCAB))
    logits[T[" cat"]] = 5.0
    sampler.adjust(logits)
    assert logits[T[" cat"]] == float("-inf") and int(logits.argmax()) != T[" cat"]
    only = torch.full((len(VOCAB),), float("-inf"))
    only[T[" cat"]] = 1.0  # the grammar allows nothing else: the guard gives way
    sampler.adjust(only)
    assert int(only.argmax()) == T[" cat"] and bool(torch.isfinite(only).any())


def test_an_array_that_repeats_an_item_is_closed():
    vocab = ['{"', "tips", '":', " [", '"', "learn", " words", '",', ' "', '"]', ",", " ", "]}"]
    t = {text: i for i, text in enumerate(vocab)}
    guard = StringGuard(TokenTexts(vocab), n=4)
    for text in ['{"', "tips", '":', " [", '"', "learn", " words", '",', ' "', "learn"]:
        guard.accept(t[text])
    assert guard.banned() == []  # "learn" so far: not yet equal to an earlier item
    guard.accept(t[" words"])
    assert guard.banned() == [t['",']]  # equal to the first item: it may close, but not close-and-continue
    guard.accept(t['"'])
    assert guard.banned() == [t[","]]  # the array repeated an item: no further item
    guard.accept(t["]}"])
    assert guard.banned() == []
