"""The adapter study's report (bench/study/report.py) from a study laid out as run_study.sh writes it: seed folders,
one stress report per method with its rows, ΔW profiles. The numbers are planted, so the verdicts are known."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from app.evaluation.stress import summarize_stress
from bench.study import report as study

META = {
    "suite": "data/stress",
    "persona": "support-friendly",
    "intended_label": "friendly",
    "messages": 40,
    "sessions": 6,
    "session_turns": 36,
    "max_tokens": 64,
    "window": 4,
    "base_model": "tiny",
    "device": "cpu",
    "scorer_version": "abc",
}


def _rows(p_friendly: float, seed: int) -> dict:
    rng = random.Random(seed)

    def row(alert: bool = False) -> dict:
        friendly = rng.random() < p_friendly
        return {
            "style": rng.choice(["angry", "polite"]),
            "label": "friendly" if friendly else "casual",
            "match": friendly,
            "distance": 0.3 if friendly else 0.8,
            "formality": rng.random(),
            "politeness": rng.random(),
            "warmth": rng.random(),
            "customer_formality": rng.random(),
            "customer_politeness": rng.random(),
            "alert": alert or not friendly,
            "dispersion": 0.1,
        }

    return {"single": [row() for _ in range(40)], "sessions": [[row() for _ in range(6)] for _ in range(6)]}


def _write_method(root: Path, method: str, p_friendly: float, params: int, seeds=(13, 14)) -> None:
    runs = {}
    for seed in seeds:
        folder = root / "models/adapters/study" / method / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "target_modules": ["q"]}))
        (folder / "adapter_model.safetensors").write_bytes(b"x" * 10)
        summary = {
            "trainable_params": params,
            "cpu_s": 600.0,
            "final_loss": 1.5,
            "config": {"seed": seed, "steps": 200},
        }
        (folder / "training_summary.json").write_text(json.dumps({**summary, "duration_s": 700}))
        runs[f"{method}-seed{seed}"] = _rows(p_friendly, seed * 7 + len(method))
    out = root / "bench/results/study/stress" / method
    out.mkdir(parents=True)
    report = {
        "meta": {**META, "created": "now"},
        "adapters": {r: summarize_stress(v["single"], v["sessions"], "friendly") for r, v in runs.items()},
        "rows": runs,
        "statistics": {"methods": {method: list(runs)}},
    }
    (out / "report.json").write_text(json.dumps(report))


def test_report_gives_intervals_paired_verdicts_and_concentration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(study, "ADAPTER_ROOT", Path("models/adapters"))
    monkeypatch.setattr(study, "STUDY", Path("models/adapters/study"))
    _write_method(tmp_path, "lora-r8", 0.3, 921_600)
    _write_method(tmp_path, "dora-r8", 0.95, 967_680)  # planted: clearly better than the control
    _write_method(tmp_path, "adalora-r8", 0.3, 922_560)  # planted: the same as the control
    out = tmp_path / "bench/results/study"
    profiles = {
        f"{m}-seed{s}": {
            "q_head_energy_top10pct_share": share,
            "layer_energy_top_third_share": share * 2 + s / 100,
            "q_head_energy": {str(k): [1.0] * 9 for k in range(30)},
        }
        for m, share in (("lora-r8", 0.15), ("dora-r8", 0.2), ("adalora-r8", 0.17))
        for s in (13, 14)
    }
    (out / "profiles.json").write_text(json.dumps(profiles))

    assert study.main(["--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    names = [m["name"] for m in report["methods"]]
    assert names == ["lora-r8", "dora-r8", "adalora-r8"]  # order of METHODS; no stress or folder for the rest
    dora = report["methods"][1]
    assert dora["seeds"] == [13, 14] and dora["paths"] == ["study/dora-r8/seed13", "study/dora-r8/seed14"]
    assert dora["steps"] == 200 and dora["trainable_params"] == 967_680
    verdicts = {
        c["method"]: c["metrics"]["single.intended_label_rate"]["verdict"] for c in report["statistics"]["comparisons"]
    }
    assert verdicts == {"dora-r8": "better", "adalora-r8": "no evidence"}
    iv = report["statistics"]["intervals"]["dora-r8"]["single.intended_label_rate"]
    assert iv["ci95"][0] <= iv["value"] <= iv["ci95"][1] and len(iv["per_seed"]) == 2
    assert len(report["concentration"]["points"]) == 6
    assert report["concentration"]["tests"]["q_head_top10~sessions.intended_label_rate"]["n"] == 6
    md = (out / "report.md").read_text()
    assert "## Paired comparisons" in md or "## Paired with `lora-r8`" in md
    assert "| dora-r8 | lora-r8 | intended label, single |" in md
    assert (out / "intervals.png").stat().st_size > 0 and (out / "profiles.png").stat().st_size > 0


def test_stress_runs_with_different_settings_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_method(tmp_path, "lora-r8", 0.5, 1)
    _write_method(tmp_path, "dora-r8", 0.5, 1)
    path = tmp_path / "bench/results/study/stress/dora-r8/report.json"
    data = json.loads(path.read_text())
    data["meta"]["max_tokens"] = 32
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="settings differ"):
        study.load_stress(tmp_path / "bench/results/study/stress")


def test_crosscpu_compares_answers_by_customer_and_turn():
    from bench.study.crosscpu import compare

    def row(customer, answer, label="friendly"):
        return {"customer": customer, "answer": answer, "label": label}

    reference = {
        "rows": {
            "a": {
                "single": [row("x", "hi"), row("y", "hello")],
                "sessions": [[row("s1", "one"), row("s2", "two")], [row("t1", "three")]],
            }
        }
    }
    new = {"rows": {"a": {"single": [row("y", "hello"), row("x", "hey", "casual")], "sessions": [[row("s1", "one")]]}}}
    got = compare(new, reference)["adapters"]["a"]
    assert got["single"] == {"compared": 2, "same_answer": 1, "same_label": 1}
    assert got["session_turns"] == {"compared": 1, "same_answer": 1, "same_label": 1}
