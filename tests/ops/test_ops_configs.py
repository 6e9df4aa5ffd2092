"""Checks the ops configs (docker/, docker-compose.yml) with the real tools.

Needs promtool (Debian package `prometheus`) and docker-compose v1 (Debian package
`docker-compose`); install them with `make system-deps`. Missing tools fail the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import promql  # noqa: E402

PROM_DIR = REPO_ROOT / "docker" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULE_FILES = [PROM_DIR / "rules" / "recording.yml", PROM_DIR / "rules" / "alerts.yml"]
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

HISTOGRAMS = {
    "tonewatch_request_latency_seconds",
    "tonewatch_time_to_first_token_seconds",
    "tonewatch_inter_token_latency_seconds",
    "tonewatch_queue_wait_seconds",
    "tonewatch_batch_size",
    "tonewatch_adapter_load_seconds",
    "tonewatch_persona_distance",
    "tonewatch_tone_dimension",
    "tonewatch_scoring_seconds",
    "tonewatch_history_write_seconds",
}
OTHER_METRICS = {
    "tonewatch_prompt_tokens_total",
    "tonewatch_generated_tokens_total",
    "tonewatch_requests_total",
    "tonewatch_queue_depth",
    "tonewatch_adapter_loads_total",
    "tonewatch_adapter_swaps_total",
    "tonewatch_adapters_loaded",
    "tonewatch_active_adapter",
    "tonewatch_tone_label_total",
    "tonewatch_persona_mismatch_total",
    "tonewatch_tone_drift_score",
    "tonewatch_tone_drift_alerts_total",
    "tonewatch_sessions_active",
    "tonewatch_sessions_drifting",
    "tonewatch_history_write_errors_total",
    "tonewatch_history_spilled_turns",
    "tonewatch_history_dropped_turns_total",
    "tonewatch_latency_spikes_total",
}
KNOWN_METRICS = HISTOGRAMS | OTHER_METRICS

REQUIRED_ALERTS = {
    "ToneDriftHigh",
    "PersonaMismatchRateHigh",
    "LatencySpikes",
    "LatencyP99High",
    "AdapterLoadFailures",
    "HistoryWriteErrors",
    "HistorySpillGrowing",
    "ServiceDown",
}
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` not found on PATH: run `make system-deps` "
            f"(installs the Debian packages prometheus and docker-compose)"
        )
    return path


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def _base_metric(name: str) -> str:
    if name in KNOWN_METRICS:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return name


def _metric_names(expr: str) -> set[str]:
    # drop string literals, then recording-rule names (they contain colons)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"[A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z0-9_]+)+", " ", expr)
    return set(re.findall(r"\btonewatch_[a-z_]+", expr))


# ---------------------------------------------------------------- promtool


def test_promtool_check_config():
    _run([_tool("promtool"), "check", "config", str(PROM_CONFIG)])


def test_promtool_check_rules():
    _run([_tool("promtool"), "check", "rules", *map(str, RULE_FILES)])


def test_promtool_rule_unit_tests():
    assert RULE_TESTS, "no promtool unit tests in docker/prometheus/tests/"
    _run([_tool("promtool"), "test", "rules", *map(str, RULE_TESTS)])


def test_dashboard_queries_parse(tmp_path):
    """Every dashboard query is valid PromQL (checked by promtool as recording rules)."""
    queries = promql.dashboard_queries()
    assert queries
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    _run([_tool("promtool"), "check", "rules", str(path)])


# ---------------------------------------------------------------- compose


def test_compose_config_valid():
    env = dict(os.environ, TONEWATCH_ADMIN_TOKEN="test-token-0123456789")
    _run([_tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q"], env=env)


def test_compose_gateway_profile():
    """`--profile gateway` adds an upstream engine and a Tonewatch relaying to it (TONEWATCH_UPSTREAM_URL)."""
    env = dict(os.environ, TONEWATCH_ADMIN_TOKEN="test-token-0123456789")
    _run([_tool("docker-compose"), "-f", str(COMPOSE_FILE), "--profile", "gateway", "config", "-q"], env=env)
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    gateway = config["services"]["tonewatch-gateway"]
    assert gateway["profiles"] == ["gateway"] and "TONEWATCH_UPSTREAM_URL" in gateway["environment"]
    assert "llamacpp" in gateway["depends_on"]
    assert "profiles" not in config["services"]["tonewatch"]  # the default stack is unchanged


def test_compose_requires_admin_token():
    env = {k: v for k, v in os.environ.items() if k != "TONEWATCH_ADMIN_TOKEN"}
    proc = subprocess.run(
        [_tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if (REPO_ROOT / ".env").exists():
        pytest.skip(".env present: compose may take TONEWATCH_ADMIN_TOKEN from it")
    assert proc.returncode != 0
    assert "TONEWATCH_ADMIN_TOKEN" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- dashboard / rules content


def test_dashboard_uses_only_known_metrics():
    unknown = {}
    for name, expr in promql.dashboard_queries(raw=True):
        names = _metric_names(expr)
        assert names, f"{name}: no tonewatch metric in {expr!r}"
        bad = sorted(n for n in names if _base_metric(n) not in KNOWN_METRICS)
        if bad:
            unknown[name] = bad
    assert not unknown, f"dashboard queries use unknown metrics: {unknown}"


def test_dashboard_queries_have_no_leftover_variables():
    for name, expr in promql.dashboard_queries():
        assert "$" not in expr and "[[" not in expr, f"{name}: unsubstituted variable in {expr!r}"


def test_dashboard_template_variables():
    names = {name for name, _ in promql.dashboard_queries(raw=True) if name.startswith("variable:")}
    assert {"variable:adapter", "variable:persona"} <= names


def test_rules_use_only_known_metrics():
    recorded = {rule["record"] for rule in promql.rules() if "record" in rule}
    for name, expr in promql.rule_expressions():
        bad = sorted(n for n in _metric_names(expr) if _base_metric(n) not in KNOWN_METRICS)
        assert not bad, f"{name} uses unknown metrics {bad}"
        for used in re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?::[A-Za-z0-9_]+)+", re.sub(r'"[^"]*"', '""', expr)):
            assert used in recorded, f"{name} uses undefined recording rule {used}"


def test_every_alert_has_severity_and_runbook():
    alerts = [rule for rule in promql.rules() if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert names >= REQUIRED_ALERTS, f"missing alerts: {sorted(REQUIRED_ALERTS - names)}"
    for rule in alerts:
        assert rule.get("labels", {}).get("severity") in {"info", "warning", "critical"}, rule["alert"]
        annotations = rule.get("annotations", {})
        for key in REQUIRED_ANNOTATIONS:
            assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: missing annotation {key}"


def test_every_alert_has_firing_and_silent_unit_test():
    firing, silent = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8")).get("tests", []):
            for check in case.get("alert_rule_test", []) or []:
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {rule["alert"] for rule in promql.rules() if "alert" in rule}
    assert alerts <= firing, f"alerts never expected to fire: {sorted(alerts - firing)}"
    assert alerts <= silent, f"alerts never expected to stay silent: {sorted(alerts - silent)}"
