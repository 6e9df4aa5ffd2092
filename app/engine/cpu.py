"""What CPU the engine runs on, and what it chose for that CPU.

Why this exists: machines of one kind differ (a Xeon with AVX-512 and AMX, an AMD EPYC with AVX2 only), and a fast
path tuned on one can lose, or lose accuracy, on the other. fbgemm's int8 matmul without reduce_range is the
sharpest case: on AVX2 its 16-bit pair sums saturate (relative error 0.09–0.15 on random layers, measured on an
AMD EPYC, against 0.016–0.020 with reduce_range), while VNNI CPUs accumulate in 32 bits. So every CPU-specific
path (int8 kernel, reordered output head, lean decode forward, decode threads) is decided by measuring at
start-up, and the decisions are reported here: a start-up log line and `/readyz` name the CPU and each choice."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

# the flags that decide which kernels torch, MKL, oneDNN and fbgemm can use
FEATURE_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor is enough: the cores of one machine are alike
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name(info: dict[str, str] | None = None) -> str:
    """The CPU's model name, as `lscpu` prints it: what a figure (step time, throughput, decoded answers) names."""
    info = _cpuinfo() if info is None else info
    return info.get("model name") or platform.processor() or platform.machine()


@dataclass
class PlatformReport:
    """The CPU, its kernel-relevant features, and the engine's measured choices (filled in as they are made)."""

    device: str
    cpu: str
    torch_capability: str
    features: list[str]
    choices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def detect(cls, device: str) -> PlatformReport:
        info = _cpuinfo()
        flags = set(info.get("flags", "").split())
        return cls(
            device=device,
            cpu=cpu_name(info),
            torch_capability=str(torch.backends.cpu.get_cpu_capability()),
            features=[f for f in FEATURE_FLAGS if f in flags],
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "device": self.device,
            "cpu": self.cpu,
            "torch_capability": self.torch_capability,
            "features": list(self.features),
            "choices": dict(self.choices),
        }

    def summary(self) -> str:
        choices = ", ".join(f"{k}={v}" for k, v in self.choices.items()) or "none"
        return f"{self.cpu} ({self.torch_capability}; {' '.join(self.features) or 'no listed features'}): {choices}"
