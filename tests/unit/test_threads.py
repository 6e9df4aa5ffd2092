"""The start-up thread probe: it decides from timings, never breaks start-up, and leaves torch as it found it."""

import torch

from app.engine.threads import PROBE_ROWS, wide_from


def test_probe_answers_one_of_its_choices_and_restores_threads(tiny):
    model, tokenizer = tiny
    before = torch.get_num_threads()
    with torch.no_grad():
        got = wide_from(model, device="cpu", cores=2, pad_id=tokenizer.pad_token_id, default=8)
    assert got in (*PROBE_ROWS, 8)
    assert torch.get_num_threads() == before


def test_one_core_or_a_gpu_keeps_the_default(tiny):
    model, _tokenizer = tiny
    assert wide_from(model, device="cpu", cores=1, pad_id=0, default=8) == 8
    assert wide_from(model, device="cuda:0", cores=16, pad_id=0, default=8) == 8


def test_a_model_the_probe_cannot_drive_keeps_the_default():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, **kwargs):
            raise RuntimeError("no decode here")

    before = torch.get_num_threads()
    assert wide_from(Broken(), device="cpu", cores=2, pad_id=0, default=8) == 8
    assert torch.get_num_threads() == before
