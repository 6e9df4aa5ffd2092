import torch

from app.engine.sampling import RowSampler, SamplingParams, sample
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


TRICKY = [
    "Hello there! Your order #4471 ships on Monday.",
    "Déjà vu: naïve café — “quoted” ‘text’ … done",
    "Emoji 😀👍🏽 and 🇩🇪 flags, 中文字符, 日本語のテキスト, 한국어",
    "  leading spaces\n\n\tand tabs\r\n  trailing  ",
    "<|im_end|> is text here, not a token",
]


def test_incremental_text_equals_a_full_decode_on_the_real_tokenizer(bundled):
    """The window decode must give exactly the text one decode of all ids gives, token by token and at the end,
    with multi-byte characters split across tokens and special tokens in the middle."""
    _, tokenizer, _ = bundled
    special = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for text in TRICKY:
        ids = tokenizer.encode(text, add_special_tokens=False)
        ids = [*ids[:3], special, *ids[3:]]  # a special token mid-stream decodes to nothing
        a = TextAssembler(tokenizer)
        emitted = ""
        for n, token in enumerate(ids, 1):
            emitted += a.add(token)
            full = tokenizer.decode(ids[:n], skip_special_tokens=True)
            if not full.endswith("\ufffd"):
                assert a.text == full
        emitted += a.finish()
        assert emitted == a.text == tokenizer.decode(ids, skip_special_tokens=True)


def test_a_stop_spanning_tokens_is_found_late_in_a_long_text(bundled):
    _, tokenizer, _ = bundled
    ids = tokenizer.encode("word " * 300 + "and then STOP HERE more", add_special_tokens=False)
    a = TextAssembler(tokenizer, ("STOP HERE",))
    out = ""
    for token in ids:
        out += a.add(token)
        if a.stopped:
            break
    assert a.stopped and out == a.text == "word " * 300 + "and then "


def picks(logits, params_list, samplers=None):
    samplers = samplers or [RowSampler.create(p) for p in params_list]
    return [p.token for p in sample(logits, samplers)], samplers


def test_greedy_rows_are_argmax_and_sampled_rows_follow_their_seed():
    torch.manual_seed(1)
    logits = torch.randn(3, 50)
    params = [
        SamplingParams(5, temperature=0),
        SamplingParams(5, temperature=0.9, seed=7),
        SamplingParams(5, temperature=0.9, seed=7),
    ]
    first, _ = picks(logits, params)
    assert first[0] == int(torch.argmax(logits[0]))
    # a seeded row reproduces alone, independent of its neighbours
    alone, _ = picks(logits[1:2], [params[1]])
    assert alone[0] == first[1]


def test_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([[5.0, 4.0, -10.0, -10.0]])
    params = SamplingParams(1, temperature=1.0, top_p=0.5, seed=3)
    sampler = [RowSampler.create(params)]
    assert {picks(logits, [params], sampler)[0][0] for _ in range(50)} == {0}
    wide = SamplingParams(1, temperature=1.0, top_p=1.0, seed=3)
    sampler = [RowSampler.create(wide)]
    assert {picks(logits, [wide], sampler)[0][0] for _ in range(200)} >= {0, 1}


def test_logit_bias_applies_to_its_row_only():
    logits = torch.zeros(2, 10)
    logits[:, 3] = 1.0
    biased = SamplingParams(4, temperature=0, logit_bias=((7, 50.0), (3, -100.0)))
    tokens, _ = picks(logits, [biased, SamplingParams(4, temperature=0)])
    assert tokens == [7, 3]
    assert torch.equal(logits[:, 3], torch.ones(2))  # the model's logits are never modified


def test_frequency_and_presence_penalties_follow_counts():
    logits = torch.tensor([[2.0, 1.9, 0.0]])
    params = SamplingParams(4, temperature=0, frequency_penalty=0.5)
    sampler = RowSampler.create(params)
    assert picks(logits, [params], [sampler])[0] == [0]
    sampler.accept(0)
    assert picks(logits, [params], [sampler])[0] == [1]  # 2.0 - 0.5 < 1.9
    presence = SamplingParams(4, temperature=0, presence_penalty=0.05)
    other = RowSampler.create(presence)
    other.accept(0)
    other.accept(0)
    assert picks(logits, [presence], [other])[0] == [0]  # presence counts once: 1.95 > 1.9


def test_logprobs_and_top_logprobs():
    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0]])
    params = SamplingParams(1, temperature=0, logprobs=True, top_logprobs=2)
    [pick] = sample(logits, [RowSampler.create(params)])
    expected = torch.log_softmax(logits[0], dim=-1)
    assert pick.token == 0 and abs(pick.logprob - float(expected[0])) < 1e-6
    assert [t for t, _ in pick.top] == [0, 1]


def test_a_row_whose_sampling_fails_fails_alone():
    logits = torch.zeros(2, 4)
    logits[1] = float("nan")
    out = sample(
        logits,
        [
            RowSampler.create(SamplingParams(1, temperature=0.8, seed=1)),
            RowSampler.create(SamplingParams(1, temperature=0.8, seed=1)),
        ],
    )
    assert not isinstance(out[0], Exception) and isinstance(out[1], Exception)
