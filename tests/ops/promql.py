"""PromQL expressions shipped with the ops configs, ready to run against Prometheus.

``dashboard_queries()`` returns every query of the Grafana dashboard (panel targets,
annotation queries and template-variable queries that are plain PromQL), and
``rule_expressions()`` every recording and alerting rule expression, each as a list of
``(name, expr)`` pairs. Grafana template variables are replaced so the expressions are
valid PromQL: ``$adapter`` / ``$persona`` become ``.*`` (an equality matcher on them
becomes a regex matcher ``=~".*"``), ``$__rate_interval`` / ``$__interval`` become
``1m``. Only the standard library and PyYAML are used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "tonewatch.json"
RULES_DIR = REPO_ROOT / "docker" / "prometheus" / "rules"
RULE_FILES = (RULES_DIR / "recording.yml", RULES_DIR / "alerts.yml")

TEMPLATE_VARIABLES = ("adapter", "persona")
INTERVAL_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}

# $var, ${var}, ${var:format} or [[var]]
_VAR = r"(?:\$\{(?P<a>%(n)s)(?::[a-z]+)?\}|\$(?P<b>%(n)s)\b|\[\[(?P<c>%(n)s)\]\])"


def substitute(expr: str) -> str:
    """Replace Grafana variables with PromQL that selects every value."""
    for name in TEMPLATE_VARIABLES:
        var = _VAR % {"n": re.escape(name)}
        # label="$adapter" / label!="$adapter" -> regex matchers
        expr = re.sub(r'(\w+)\s*=\s*"' + var + '"', r'\1=~".*"', expr)
        expr = re.sub(r'(\w+)\s*!=\s*"' + var + '"', r'\1!~".*"', expr)
        expr = re.sub(var, ".*", expr)
    for name, value in INTERVAL_VARIABLES.items():
        expr = re.sub(_VAR % {"n": re.escape(name)}, value, expr)
    return expr


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_panels() -> list[dict]:
    """Every panel of the dashboard (rows flattened), as in the JSON."""
    return list(_panels(_load_dashboard().get("panels", [])))


def dashboard_queries(raw: bool = False) -> list[tuple[str, str]]:
    """(name, expr) for every PromQL query in the dashboard.

    Names look like ``panel:<title>:<refId>``, ``annotation:<name>`` and
    ``variable:<name>``. ``label_values(...)`` variable queries are reduced to their
    series selector. With ``raw=True`` Grafana variables are left in place.
    """
    dash = _load_dashboard()
    out: list[tuple[str, str]] = []
    for panel in _panels(dash.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                out.append((f"panel:{panel.get('title', panel.get('id'))}:{target.get('refId', '?')}", expr))
    for ann in dash.get("annotations", {}).get("list", []):
        if ann.get("expr"):
            out.append((f"annotation:{ann['name']}", ann["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if not query:
            continue
        m = re.fullmatch(r"\s*label_values\((?P<sel>.*),\s*(?P<label>\w+)\)\s*", query)
        if m:
            query = m.group("sel")
        out.append((f"variable:{var['name']}", query))
    if raw:
        return out
    return [(name, substitute(expr)) for name, expr in out]


def rule_groups() -> list[dict]:
    groups: list[dict] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text(encoding="utf-8")).get("groups", []))
    return groups


def rules() -> list[dict]:
    return [rule for group in rule_groups() for rule in group.get("rules", [])]


def rule_expressions() -> list[tuple[str, str]]:
    """(name, expr) for every recording rule (``record:<name>``) and alert (``alert:<name>``)."""
    out = []
    for rule in rules():
        kind = "record" if "record" in rule else "alert"
        out.append((f"{kind}:{rule[kind]}", rule["expr"].strip()))
    return out
