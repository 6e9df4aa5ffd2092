"""The links from alerts and the dashboard into the operator console: they open /console's sessions view with
filters the console reads from its URL hash (and the session list API takes), filled from the alert's or series'
own adapter and persona labels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERTS = REPO_ROOT / "docker" / "prometheus" / "rules" / "alerts.yml"
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "tonewatch.json"
CONSOLE_JS = REPO_ROOT / "app" / "console" / "console.js"
LINKED_ALERTS = {"ToneDriftHigh", "PersonaMismatchRateHigh"}


def console_filters() -> set[str]:
    match = re.search(r"const LIST_FILTERS = \[([^\]]*)\]", CONSOLE_JS.read_text())
    assert match, "console.js no longer declares LIST_FILTERS"
    return set(re.findall(r'"(\w+)"', match.group(1)))


def sessions_query(link: str, prefix: str) -> dict[str, str]:
    assert link.startswith(prefix + "/console#/sessions?"), link
    return dict(parse_qsl(link.split("?", 1)[1]))


def test_drift_alerts_link_to_their_sessions_in_the_console():
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    linked = {r["alert"]: r["annotations"].get("console") for r in rules if r["alert"] in LINKED_ALERTS}
    assert set(linked) == LINKED_ALERTS and all(linked.values()), linked
    for alert, link in linked.items():
        query = sessions_query(link, "")  # a path: the operator's TONEWATCH_PUBLIC_URL goes in front
        assert set(query) <= console_filters(), alert
        assert "$labels.adapter" in query["adapter"] and "$labels.persona" in query["persona"], alert
    assert sessions_query(linked["ToneDriftHigh"], "")["alerting"] == "true"


def test_dashboard_links_open_the_console_at_the_configured_url():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["console_url"]["type"] == "textbox"
    links = [link["url"] for link in dashboard["links"]]
    data_links = [
        (panel["title"], link["url"])
        for panel in dashboard["panels"]
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    assert links and data_links
    for url in links + [url for _, url in data_links]:
        assert set(sessions_query(url, "${console_url}")) <= console_filters(), url
    for title, url in data_links:
        query = sessions_query(url, "${console_url}")
        assert query["adapter"] == "${__field.labels.adapter}", title
        assert query["persona"] == "${__field.labels.persona}", title
