import torch

from app.engine.sampling import SamplingParams, choose_tokens, make_generator
from app.engine.text import TextAssembler


class CharTokenizer:
    """Token id = a character's code point; enough to test stop handling without a model."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def feed(assembler, text):
    out = []
    for ch in text:
        out.append(assembler.add(ord(ch)))
        if assembler.stopped:
            break
    return out


def test_stop_string_is_cut_and_never_emitted():
    a = TextAssembler(CharTokenizer(), ("END",))
    pieces = feed(a, "hello ENDworld")
    assert a.stopped
    assert "".join(pieces) == "hello "
    assert a.text == "hello "


def test_partial_stop_prefix_is_held_back_then_released():
    a = TextAssembler(CharTokenizer(), ("END",))
    pieces = feed(a, "xEN")
    assert "".join(pieces) == "x"  # "EN" could still become "END"
    pieces.append(a.add(ord("!")))
    assert "".join(pieces) + a.finish() == "xEN!"
    assert not a.stopped


def test_no_stops_emits_everything():
    a = TextAssembler(CharTokenizer())
    assert "".join(feed(a, "abc")) + a.finish() == "abc"


def test_greedy_rows_are_argmax_and_sampled_rows_follow_their_seed():
    torch.manual_seed(1)
    logits = torch.randn(3, 50)
    params = [
        SamplingParams(5, temperature=0),
        SamplingParams(5, temperature=0.9, seed=7),
        SamplingParams(5, temperature=0.9, seed=7),
    ]
    gens = [make_generator(p) for p in params]
    first = choose_tokens(logits, params, gens)
    assert first[0] == int(torch.argmax(logits[0]))
    # a seeded row reproduces alone, independent of its neighbours
    alone = choose_tokens(logits[1:2], [params[1]], [make_generator(params[1])])
    assert alone[0] == first[1]


def test_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([[5.0, 4.0, -10.0, -10.0]])
    params = SamplingParams(1, temperature=1.0, top_p=0.5, seed=3)
    gen = make_generator(params)
    picks = {choose_tokens(logits, [params], [gen])[0] for _ in range(50)}
    assert picks == {0}
    wide = SamplingParams(1, temperature=1.0, top_p=1.0, seed=3)
    gen = make_generator(wide)
    assert {choose_tokens(logits, [wide], [gen])[0] for _ in range(200)} >= {0, 1}
