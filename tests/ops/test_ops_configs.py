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


def _declared_metrics() -> tuple[set[str], set[str]]:
    """(histogram base names, every other exported name) from the service's own Metrics: rules and dashboards
    may only use what the service really exports."""
    from app.metrics import Metrics

    histograms, others = set(), set()
    for family in Metrics().registry.collect():
        if family.type == "histogram":
            histograms.add(family.name)
        elif family.type == "counter":
            others.add(family.name + "_total")
        else:
            others.add(family.name)
    return histograms, others


HISTOGRAMS, OTHER_METRICS = _declared_metrics()
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


def test_compose_tracing_profile():
    """`--profile tracing` adds Phoenix and a Tonewatch exporting to it, configured by OTEL_* variables only."""
    env = dict(os.environ, TONEWATCH_ADMIN_TOKEN="test-token-0123456789")
    _run([_tool("docker-compose"), "-f", str(COMPOSE_FILE), "--profile", "tracing", "config", "-q"], env=env)
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    traced = config["services"]["tonewatch-traced"]
    assert traced["profiles"] == ["tracing"] == config["services"]["phoenix"]["profiles"]
    assert "phoenix:6006/v1/traces" in traced["environment"]["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    assert not any(k.startswith("OTEL_") for k in config["services"]["tonewatch"].get("environment", {}))


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


# ---------------------------------------------------------------- several replicas


def test_compose_replicas_profile():
    env = dict(os.environ, TONEWATCH_ADMIN_TOKEN="test-token-0123456789")
    _run([_tool("docker-compose"), "-f", str(COMPOSE_FILE), "--profile", "replicas", "config", "-q"], env=env)
    config = yaml.safe_load(COMPOSE_FILE.read_text())
    replicas = [n for n in config["services"] if n.startswith("tonewatch-r")]
    assert len(replicas) == 3
    urls = {config["services"][n]["environment"]["TONEWATCH_REDIS_URL"] for n in replicas}
    assert urls == {"redis://redis:6379/0"}  # one shared Redis
    assert {config["services"][n]["environment"]["TONEWATCH_REPLICA_NAME"] for n in replicas} == {"r1", "r2", "r3"}


def test_nginx_configs_agree_and_parse(tmp_path):
    """compose.conf is tonewatch.conf rendered for compose; the loopback rendering the tests run passes nginx -t."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is not installed: run `make system-deps` (Debian package nginx-light)")
    template = (REPO_ROOT / "docker" / "nginx" / "tonewatch.conf").read_text()
    compose = (REPO_ROOT / "docker" / "nginx" / "compose.conf").read_text()

    def body(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("#"))

    servers = "\n".join(f"        server tonewatch-r{i}:8000 max_fails=1 fail_timeout=2s;" for i in (1, 2, 3))
    rendered = (
        template.replace("${NGINX_PID}", "/tmp/nginx.pid")
        .replace("${NGINX_TMP}", "/tmp")
        .replace("${NGINX_UPSTREAMS}", servers)
        .replace("${NGINX_LISTEN}", "8080")
    )
    assert body(rendered) == body(compose)
    (tmp_path / "tmp").mkdir()
    local = template.replace("${NGINX_PID}", str(tmp_path / "nginx.pid")).replace("${NGINX_TMP}", str(tmp_path / "tmp"))
    local = local.replace("${NGINX_UPSTREAMS}", "        server 127.0.0.1:9;").replace("${NGINX_LISTEN}", "127.0.0.1:9")
    (tmp_path / "nginx.conf").write_text(local)
    proc = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


def test_kubernetes_manifests_validate():
    from kubernetes_validate import validate

    k8s = REPO_ROOT / "docker" / "k8s"
    kinds = {}
    for path in sorted(k8s.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            validate(doc, "1.30.0", strict=True)  # raises on any schema violation or unknown field
            kinds[doc["kind"]] = doc
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= set(kinds)
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    metric = kinds["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric == "tonewatch_queue_depth" and metric in OTHER_METRICS
