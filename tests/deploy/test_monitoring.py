"""The chart's Grafana dashboard and PrometheusRule: well formed, and built only on series the
processor and worker really export (a renamed metric fails here, not on a blank panel)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from chart import CHART, Rendered, needs_helm, render
from prometheus_client.metrics import MetricWrapperBase
from ruamel.yaml import YAML

from cfstream.observability.metrics import ProcessorMetrics, WorkerMetrics

DASHBOARD_FILE = CHART / "dashboards" / "cfstream.json"
MONITORING_VALUES = CHART / "ci" / "dashboard-alerts-values.yaml"
# Series Prometheus itself adds to every scrape target.
SCRAPE_SERIES = {"up"}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}
PROMQL_WORDS = {"and", "or", "unless", "offset", "bool"}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool: apt-get install prometheus (Debian), or put it on PATH")


def exported_series() -> set[str]:
    """Sample names of the processor's and the worker's registries, with every labelled metric
    given one child, so that counters show as ``_total`` and histograms as ``_bucket``."""
    names: set[str] = set()
    for metrics in (ProcessorMetrics(), WorkerMetrics()):
        for value in vars(metrics).values():
            if isinstance(value, MetricWrapperBase) and value._labelnames:
                value.labels(*["x"] * len(value._labelnames))
        names |= {s.name for family in metrics.registry.collect() for s in family.samples}
    return names


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    words = re.findall(r"(?<![\w$.])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return set(words) - PROMQL_WORDS


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and every query variable (the selector
    inside its ``label_values(selector, label)``)."""
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert match, f"${variable['name']}: not label_values(selector, label)"
            found.append((f"${variable['name']}", match.group(1)))
    return found


def rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (rule,) = Rendered(docs).of_kind("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


# -- the metric names -------------------------------------------------------------------------


def test_series_names_finds_metrics_and_nothing_else() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, task) (rate(cfstream_fire_lateness_seconds_bucket'
            '{service=~"a|b", x="rate(y)"}[$__rate_interval]))) > 1.5e3 and on (pod) up offset 5m '
            'or vector(0)')
    assert series_names(expr) == {"cfstream_fire_lateness_seconds_bucket", "up"}


def test_exported_series_are_the_real_sample_names() -> None:
    exported = exported_series()
    assert {"cfstream_fires_total", "cfstream_fire_lateness_seconds_bucket",
            "cfstream_consumer_lag", "cfstream_executions_failed_total",
            "process_cpu_seconds_total"} <= exported
    # The renamed metric a stale dashboard would ask for is not there.
    assert "cfstream_fires" not in exported and "cfstream_fire_total" not in exported


def test_dashboard_queries_use_only_exported_series() -> None:
    exported = exported_series() | SCRAPE_SERIES
    used: set[str] = set()
    for title, expr in queries(dashboard()):
        names = series_names(expr)
        assert names, f"{title}: no metric in {expr!r}"
        assert names <= exported, f"{title}: not exported: {sorted(names - exported)}"
        used |= names
    # Every cfstream metric has a panel: a new metric gets one too.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n)
                for n in exported if n.startswith("cfstream_")}
    shown = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in used}
    assert families <= shown, f"no panel for {sorted(families - shown)}"


@needs_helm
@pytest.mark.parametrize("args", [[], ["-f", str(MONITORING_VALUES)]], ids=["defaults", "ci"])
def test_alert_expressions_use_only_exported_series(args: list[str]) -> None:
    exported = exported_series() | SCRAPE_SERIES
    found = rules(render("--set", "metrics.prometheusRule.enabled=true", *args))
    assert found
    for rule in found:
        names = series_names(rule["expr"])
        assert names and names <= exported, f"{rule['alert']}: {sorted(names - exported)}"


# -- the dashboard ----------------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"

    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in board["panels"] if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}"
    for title, expr in queries(board):
        used = set(re.findall(r"\$\{?(\w+)", expr))
        assert used <= set(variables) | GRAFANA_BUILTINS, f"{title}: undefined {used}"


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@needs_helm
def test_dashboard_config_map_carries_the_file_and_the_sidecar_label() -> None:
    r = Rendered(render("--set", "metrics.dashboard.enabled=true"))
    (config_map,) = [c for c in r.of_kind("ConfigMap") if "cfstream.json" in c["data"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["cfstream.json"]) == dashboard()

    r = Rendered(render("-f", str(MONITORING_VALUES)))
    (config_map,) = [c for c in r.of_kind("ConfigMap") if "cfstream.json" in c["data"]]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "yes"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "cfstream"}

    r = Rendered(render())
    assert not [c for c in r.of_kind("ConfigMap") if "cfstream.json" in c["data"]]


# -- the alerts -------------------------------------------------------------------------------


def values_of(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = YAML(typ="safe").load(path.read_text()) or {}
    return loaded


def alert_settings(*overrides: Path) -> dict[str, dict[str, Any]]:
    """metrics.prometheusRule from values.yaml, with each override file's entries on top."""
    settings = values_of(CHART / "values.yaml")["metrics"]["prometheusRule"]
    for path in overrides:
        for name, value in values_of(path)["metrics"]["prometheusRule"].items():
            if isinstance(value, dict) and isinstance(settings.get(name), dict):
                settings[name] = {**settings[name], **value}
            else:
                settings[name] = value
    return settings  # type: ignore[no-any-return]


def comparisons(expr: str) -> list[tuple[str, float]]:
    return [(op, float(n)) for op, n in re.findall(r"([<>])\s*([0-9.]+)\b", expr)]


@needs_helm
@pytest.mark.parametrize("overrides", [[], [MONITORING_VALUES]], ids=["defaults", "ci"])
def test_rules_carry_the_configured_thresholds(overrides: list[Path]) -> None:
    want = alert_settings(*overrides)
    args = [a for path in overrides for a in ("-f", str(path))]
    docs = render("--set", "metrics.prometheusRule.enabled=true", *args)
    (rule,) = Rendered(docs).of_kind("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert want["labels"].items() <= rule["metadata"]["labels"].items()
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for r in rules(docs):
        by_alert.setdefault(r["alert"], []).append(r)
        assert want["extraLabels"].items() <= r["labels"].items()

    (lag,) = by_alert["CfstreamConsumerLagGrowing"]
    s = want["consumerLagGrowing"]
    assert (">", float(s["threshold"])) in comparisons(lag["expr"])
    assert f"[{s['window']}]" in lag["expr"]
    assert (lag["for"], lag["labels"]["severity"]) == (s["for"], s["severity"])

    (late,) = by_alert["CfstreamFireLatenessHigh"]
    s = want["fireLatenessHigh"]
    assert "histogram_quantile(0.99," in late["expr"]
    assert comparisons(late["expr"]) == [(">", float(s["threshold"]))]
    assert f"[{s['window']}]" in late["expr"]
    assert (late["for"], late["labels"]["severity"]) == (s["for"], s["severity"])

    (dead,) = by_alert["CfstreamDeadLetters"]
    s = want["deadLetters"]
    assert f"[{s['window']}]" in dead["expr"] and f"offset {s['window']}" in dead["expr"]
    assert (dead["for"], dead["labels"]["severity"]) == (s["for"], s["severity"])

    values = values_of(CHART / "values.yaml")
    for path in overrides:
        worker = values_of(path).get("worker", {})
        values["worker"]["autoscaling"].update(worker.get("autoscaling", {}))
    autoscaling = values["worker"]["autoscaling"]
    expected = {"processor": values["processor"]["replicas"],
                "worker": autoscaling["minReplicas"] if autoscaling["enabled"]
                else values["worker"]["replicas"]}
    s = want["replicaDown"]
    down = {r["labels"]["component"]: r for r in by_alert["CfstreamReplicaDown"]}
    assert set(down) == set(expected)
    for component, replicas in expected.items():
        assert comparisons(down[component]["expr"]) == [("<", float(replicas))]
        assert f'service="t-cfstream-{component}"' in down[component]["expr"]
        assert down[component]["for"] == s["for"]


@needs_helm
def test_rules_can_be_switched_off_one_by_one() -> None:
    docs = render("--set", "metrics.prometheusRule.enabled=true",
                  "--set", "metrics.prometheusRule.deadLetters.enabled=false",
                  "--set", "worker.enabled=false")
    alerts = [(r["alert"], r["labels"].get("component")) for r in rules(docs)]
    assert ("CfstreamDeadLetters", None) not in alerts
    assert ("CfstreamReplicaDown", "processor") in alerts
    assert ("CfstreamReplicaDown", "worker") not in alerts


# -- promtool: syntax of every query, and the alerts firing on made-up series -----------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule promtool checks."""
    fill = {"__rate_interval": "2m", "namespace": "default", "service": "t-cfstream-processor"}
    recorded = []
    for i, (_, expr) in enumerate(queries(dashboard())):
        expr = re.sub(r"\$\{?(\w+)\}?", lambda m: fill[m.group(1)], expr)
        recorded.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-rules.json"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
@needs_promtool
def test_alerts_fire_on_made_up_series(tmp_path: Path) -> None:
    docs = render("--set", "metrics.prometheusRule.enabled=true")
    (rule,) = Rendered(docs).of_kind("PrometheusRule")
    (tmp_path / "rules.json").write_text(json.dumps(rule["spec"]))
    (tmp_path / "alerts-test.json").write_text(json.dumps(alerts_test(rules(docs))))
    result = promtool("test", "rules", str(tmp_path / "alerts-test.json"))
    assert result.returncode == 0, result.stdout + result.stderr


# Defaults: lag above 1000 and growing over 10m for 10m; p99 > 1s over 5m for 10m; any dead
# letter within 10m; fewer answering pods than 2 processors / 2 workers for 5m.
_W = {"namespace": "default", "service": "t-cfstream-worker"}
_P = {"namespace": "default", "service": "t-cfstream-processor"}


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def alerts_test(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    """A `promtool test rules` file: made-up series, and when each alert must (not) fire."""
    by_name = {(r["alert"], r["labels"].get("component")): r for r in rendered}

    def firing(at: str, alert: str, summary: str, **labels: str) -> dict[str, Any]:
        rule = by_name[alert, labels.get("component")]
        description = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)],
                             rule["annotations"]["description"])
        return {"eval_time": at, "alertname": alert, "exp_alerts": [{
            "exp_labels": {**labels, "severity": rule["labels"]["severity"]},
            "exp_annotations": {"summary": summary, "description": description}}]}

    def quiet(at: str, alert: str) -> dict[str, Any]:
        return {"eval_time": at, "alertname": alert, "exp_alerts": []}

    return {"rule_files": ["rules.json"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            # Executions lag grows by 200 a minute; calls lag is high but flat.
            _series("cfstream_consumer_lag", {**_W, "topic": "p.executions", "partition": "0"},
                    "0+200x40"),
            _series("cfstream_consumer_lag", {**_P, "topic": "p.calls", "partition": "0"},
                    "5000x40"),
            # Nine in ten fires later than 1 s.
            *[_series("cfstream_fire_lateness_seconds_bucket", {**_P, "le": le}, f"0+{n}x40")
              for le, n in (("0.5", 10), ("1.0", 10), ("2.5", 100), ("+Inf", 100))],
            # The first dead letter of a reason creates its counter, at 1.
            _series("cfstream_dead_letters_total", {**_W, "reason": "undecodable"}, "_x5 1x35"),
            # processor p-1 stops answering at minute 10; both workers stay up.
            _series("up", {**_P, "pod": "p-0"}, "1x40"),
            _series("up", {**_P, "pod": "p-1"}, "1x10 0x30"),
            _series("up", {**_W, "pod": "w-a"}, "1x40"),
            _series("up", {**_W, "pod": "w-b"}, "1x40"),
        ],
        "alert_rule_test": [
            quiet("12m", "CfstreamConsumerLagGrowing"),
            firing("25m", "CfstreamConsumerLagGrowing",
                   "t-cfstream-worker: lag on p.executions is 5000 records and growing",
                   **_W, topic="p.executions"),
            quiet("8m", "CfstreamFireLatenessHigh"),
            firing("20m", "CfstreamFireLatenessHigh",
                   "t-cfstream-processor: p99 fire lateness is 2.483s", **_P),
            quiet("4m", "CfstreamDeadLetters"),
            firing("6m", "CfstreamDeadLetters",
                   "t-cfstream-worker: records sent to the dead-letter topic (undecodable)",
                   **_W, reason="undecodable"),
            quiet("30m", "CfstreamDeadLetters"),
            quiet("12m", "CfstreamReplicaDown"),
            firing("20m", "CfstreamReplicaDown",
                   "t-cfstream-processor: 1 of 2 replicas answer scrapes", component="processor"),
        ],
    }]}
