"""Monitoring files: the Grafana dashboard, the Prometheus alert rules and scrape config, and the
queries of the autoscalers (deploy/grafana, deploy/prometheus, deploy/kubernetes/autoscaling).

promtool (put in .venv/bin by scripts/test) checks every rule and every query, and runs the alert
rules' unit tests (deploy/prometheus/alerts.test.yml). Every metric and label name any of these files
uses must be exported by a live node: a node on the embedded store runs a few jobs (one completed, one
dead-lettered, one webhook delivery failed) so that its labelled series exist, then its /metrics is read.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from secauto.node import Node
from secauto.store.connection import open_embedded
from tests.support.nodes import VIEWER_KEY, auth, node_settings
from tests.support.promql import names, tokens

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "secauto-cluster.json"
PROMETHEUS = DEPLOY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts.test.yml"
SCRAPE_CONFIG = PROMETHEUS / "prometheus.yml"
AUTOSCALING = DEPLOY / "kubernetes" / "autoscaling"
SCALED_OBJECT = AUTOSCALING / "keda" / "scaledobject.yaml"
ADAPTER_VALUES = AUTOSCALING / "hpa" / "prometheus-adapter-values.yaml"

# Labels Prometheus attaches to every scraped series (the example scrape config adds namespace and pod).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
# Series Prometheus makes itself for each target; no node exports them.
PROMETHEUS_SERIES = frozenset({"up"})
# What Grafana substitutes in queries, and what a sample substitution looks like.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "6h", "$job": "secauto"}
# Every node exports the same value of these: never sum them over nodes.
CLUSTER_GAUGES = frozenset({"secauto_queue_size", "secauto_queue_ready", "secauto_dlq_size", "secauto_active_nodes"})
ALERT_NAMES = {"SecAutoNodeDown", "SecAutoNoNodes", "SecAutoNoLeader", "SecAutoRedisUnreachable",
               "SecAutoQueueGrowing", "SecAutoDeadLettersGrowing", "SecAutoHighFailureRate"}


def promtool() -> str:
    """promtool on PATH or in .venv/bin; a missing promtool fails the test (scripts/test installs it)."""
    found = shutil.which("promtool") or shutil.which("promtool", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("promtool not found: ./scripts/test installs it into .venv/bin (ensure_promtool in "
                    "scripts/_venv.sh), or install Debian's prometheus package")
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    proc = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


# ---------------------------------------------------------------------------------------------------
# readers: every PromQL expression of the monitoring and autoscaling files
# ---------------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    return dashboard()["panels"]  # type: ignore[no-any-return]


def grafana_expr(expr: str) -> str:
    """The query as Grafana sends it, with its variables replaced by sample values."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace("${" + variable[1:] + "}", value).replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def dashboard_queries() -> Iterator[tuple[str, str]]:
    for panel in panels():
        for target in panel["targets"]:
            yield f"dashboard panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
            for rule in group["rules"]]


def keda_queries() -> Iterator[tuple[str, str]]:
    scaled_object = yaml.safe_load(SCALED_OBJECT.read_text(encoding="utf-8"))
    for trigger in scaled_object["spec"]["triggers"]:
        yield f"KEDA trigger {trigger['name']}", trigger["metadata"]["query"]


def adapter_queries() -> Iterator[tuple[str, str]]:
    """prometheus-adapter's metricsQuery templates, filled in as the adapter does for our HPA."""
    rules = yaml.safe_load(ADAPTER_VALUES.read_text(encoding="utf-8"))["rules"]
    for kind, group_by in (("custom", "pod"), ("external", "namespace")):
        for rule in rules[kind]:
            series = names(rule["seriesQuery"]).selectors[0].metric
            query = (rule["metricsQuery"].replace("<<.Series>>", series)
                     .replace("<<.LabelMatchers>>", 'namespace="secauto",job="secauto"')
                     .replace("<<.GroupBy>>", group_by))
            assert "<<" not in query, query
            yield f"prometheus-adapter {kind} {rule['name']['as']}", query
            yield f"prometheus-adapter {kind} {rule['name']['as']} seriesQuery", rule["seriesQuery"]


def all_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every query any of the files runs, Grafana variables substituted."""
    queries = [(where, grafana_expr(expr)) for where, expr in dashboard_queries()]
    queries += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    queries += [*keda_queries(), *adapter_queries()]
    variable_query = dashboard_variable("job")["query"]["query"]
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable_query)
    assert match, variable_query
    queries.append(("dashboard variable job", f"group by ({match[2]}) ({match[1]})"))
    return queries


def dashboard_variable(name: str) -> dict[str, Any]:
    (variable,) = [item for item in dashboard()["templating"]["list"] if item["name"] == name]
    return variable  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------
# the PromQL reader itself
# ---------------------------------------------------------------------------------------------------


def test_the_promql_reader_tells_metrics_from_functions_labels_and_strings() -> None:
    read = names('sum by (reason) (rate(secauto_jobs_failed_total{job="a",status=~"x|y"}[5m] offset 1h)) '
                 '/ ignoring (reason) group_left () sum(secauto_jobs_completed_total) > bool 0.25 '
                 'and on (job) label_replace(up, "dst", "$1", "src", "(.*)") or vector(0)')
    assert read.metrics == {"secauto_jobs_failed_total", "secauto_jobs_completed_total", "up"}
    assert read.labels == {"reason", "job", "status"}
    assert read.selectors[0].matchers == {"job": ("=", "a"), "status": ("=~", "x|y")}
    assert [selector.aggregations for selector in read.selectors] == [["sum"], ["sum"], []]
    quantile = names("histogram_quantile(0.95, sum by (le) (rate(h_bucket[5m:1m]))) + max(g) by (job)")
    assert quantile.metrics == {"h_bucket", "g"} and quantile.labels == {"le", "job"}
    assert [selector.aggregations for selector in quantile.selectors] == [["sum"], ["max"]]
    assert names("max by (job) (delta(g[15m])) > 0 or sum(x)").selectors[0].aggregations == ["max"]
    with pytest.raises(ValueError, match="without a metric name"):
        names('{__name__="secauto_queue_size"}')
    with pytest.raises(ValueError, match="cannot read"):
        tokens("rate(x[$__rate_interval])")  # an unsubstituted Grafana variable


# ---------------------------------------------------------------------------------------------------
# promtool
# ---------------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_rules() -> None:
    output = run_promtool("check", "rules", ALERTS.name, cwd=PROMETHEUS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    output = run_promtool("test", "rules", ALERT_TESTS.name, cwd=PROMETHEUS)
    assert "SUCCESS" in output


def test_every_alert_has_a_severity_a_summary_and_a_unit_test_where_it_fires() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [ALERTS.name]
    checks = [check for test in tests["tests"] for check in test["alert_rule_test"]]
    fired = {check["alertname"] for check in checks if check["exp_alerts"]}
    quiet = {check["alertname"] for check in checks if not check["exp_alerts"]}
    assert fired == ALERT_NAMES, "every alert needs a test where it fires"
    assert quiet == ALERT_NAMES, "and one where it does not"


def test_every_dashboard_and_autoscaler_query_parses_in_promtool(tmp_path: Path) -> None:
    # promtool checks PromQL in rule files only: each query becomes a recording rule.
    rules = [{"record": f"check:query_{index}", "expr": expr} for index, (_, expr) in enumerate(all_queries())]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    output = run_promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in output


def test_scrape_config_passes_promtool_check_config(tmp_path: Path) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == [ALERTS.name]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "secauto" and job["metrics_path"] == "/metrics"
    # prometheus-adapter's rules (the HPA alternative) need these labels on the series
    added = {relabel.get("target_label") for relabel in job["relabel_configs"]}
    assert {"namespace", "pod"} <= added
    selector = job["kubernetes_sd_configs"][0]["selectors"][0]["label"]
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text(encoding="utf-8"))
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert dict(item.split("=") for item in selector.split(",")) == pod_labels
    # Debian's promtool is built without Kubernetes discovery: check the rest with static targets,
    # and with a credentials file that exists.
    key_file = tmp_path / "viewer-key"
    key_file.write_text("viewer-key-0123456789abcdef\n")
    job.pop("kubernetes_sd_configs")
    job["static_configs"] = [{"targets": ["10.0.0.1:8080"]}]
    job["authorization"]["credentials_file"] = str(key_file)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    output = run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in output and f"{len(alert_rules())} rules found" in output


# ---------------------------------------------------------------------------------------------------
# the Grafana dashboard
# ---------------------------------------------------------------------------------------------------


def test_dashboard_is_importable_and_takes_its_datasource_from_a_variable() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["title"] and re.fullmatch(r"[\w-]{1,40}", board["uid"])
    assert "id" not in board or board["id"] is None  # a fixed id would clash on import
    datasource = dashboard_variable("datasource")
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    job = dashboard_variable("job")
    assert job["type"] == "query" and job["datasource"]["uid"] == "${datasource}"
    text = DASHBOARD.read_text(encoding="utf-8")
    assert "instance=" not in text and "localhost" not in text and ":8080" not in text


def test_every_panel_has_a_unique_id_a_grid_position_and_queries_on_the_variable_datasource() -> None:
    ids: set[int] = set()
    for panel in panels():
        assert panel["type"] in ("stat", "timeseries"), panel["title"]
        assert isinstance(panel["id"], int) and panel["id"] not in ids, panel["title"]
        ids.add(panel["id"])
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in "xywh"), panel["title"]
        assert grid["x"] >= 0 and grid["y"] >= 0 and grid["w"] > 0 and grid["h"] > 0
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target.get("datasource", panel["datasource"]) == panel["datasource"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels():
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_dashboard_selector_is_scoped_to_the_job_variable_and_legends_name_real_labels() -> None:
    for where, expr in dashboard_queries():
        for variable in re.findall(r"\$\{?(\w+)", expr):
            assert "$" + variable in GRAFANA_VARIABLES, f"{where}: unknown variable ${variable}"
        read = names(grafana_expr(expr.replace("$job", "__job_variable__")))
        for selector in read.selectors:
            assert selector.matchers.get("job") == ("=", "__job_variable__"), f"{where}: {selector.metric}"
    for panel in panels():
        for target in panel["targets"]:
            read = names(grafana_expr(target["expr"]))
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
                assert label in read.labels, f"panel {panel['title']}: legend {{{{{label}}}}} is not in the query"


def test_dashboard_shows_what_operators_asked_for() -> None:
    used = {metric for _, expr in dashboard_queries() for metric in names(grafana_expr(expr)).metrics}
    assert {
        "secauto_queue_size", "secauto_queue_ready", "secauto_jobs_running",          # queue, running
        "secauto_jobs_completed_total", "secauto_jobs_failed_total",                  # throughput, failures
        "secauto_job_duration_seconds_bucket", "secauto_job_queue_wait_seconds_bucket",  # p95s
        "secauto_dlq_size", "secauto_jobs_dead_lettered_total",                       # DLQ
        "secauto_node_info", "secauto_active_nodes", "secauto_leader",                # nodes, leader
        "secauto_webhook_deliveries_total", "secauto_redis_up",                       # webhooks, Redis
    } <= used
    failure_by_reason = [expr for _, expr in dashboard_queries()
                         if "secauto_jobs_failed_total" in expr and "reason" in names(grafana_expr(expr)).labels]
    assert failure_by_reason
    quantiles = [expr for _, expr in dashboard_queries() if expr.startswith("histogram_quantile(0.95,")]
    assert {"secauto_job_duration_seconds_bucket", "secauto_job_queue_wait_seconds_bucket"} <= {
        metric for expr in quantiles for metric in names(grafana_expr(expr)).metrics}


def test_cluster_gauges_are_taken_with_max_or_min_over_the_nodes() -> None:
    # Every node exports the cluster's queue, DLQ and node count: a sum would multiply them by the
    # number of nodes (and a bare series would give one value per node).
    for where, expr in all_queries():
        if where.endswith("seriesQuery"):
            continue  # prometheus-adapter's series discovery, not a value
        for selector in names(expr).selectors:
            if selector.metric in CLUSTER_GAUGES:
                assert selector.aggregations[:1] in (["max"], ["min"]), (
                    f"{where}: {selector.metric} under {selector.aggregations or 'no aggregation'}")


# ---------------------------------------------------------------------------------------------------
# against a live node
# ---------------------------------------------------------------------------------------------------


async def live_exposition() -> str:
    """/metrics of a node that completed a job, dead-lettered one and failed a webhook delivery."""
    redis = open_embedded()
    node = Node(node_settings("monitoring"), redis=redis)
    await node.start()
    try:
        async with aiohttp.ClientSession(base_url=node.url) as http:
            hook = {"url": f"{node.url}/no-such-webhook", "events": ["job.completed"], "retries": 0, "timeout": 2}
            async with http.post("/webhooks", json=hook, headers=auth()) as response:
                assert response.status in (200, 201), await response.text()
            for step, retries in (({"action": "log", "message": "ok"}, 0), ({"action": "fail", "message": "no"}, 0)):
                async with http.post("/cluster/jobs", json={"playbook": [step], "max_retries": retries},
                                     headers=auth()) as response:
                    assert response.status == 200, await response.text()
            async with asyncio.timeout(20):
                while True:
                    async with http.get("/metrics", headers=auth(VIEWER_KEY)) as response:
                        assert response.status == 200
                        text = await response.text()
                    if all(name in text for name in ('secauto_jobs_dead_lettered_total{',
                                                     'secauto_webhook_deliveries_total{outcome="failed"}',
                                                     'secauto_job_duration_seconds_bucket{')):
                        return text
                    await asyncio.sleep(0.05)
    finally:
        await node.stop(grace=0)
        await redis.aclose()


def exported(exposition: str) -> dict[str, set[str]]:
    """Every series name the exposition declares (counters as *_total, histograms as _bucket, _sum and
    _count), with the label names its samples carry."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        suffixes: tuple[str, ...]
        if family.type == "counter":
            suffixes = ("_total",)
        elif family.type == "histogram":
            suffixes = ("_bucket", "_sum", "_count")
        elif family.type == "summary":
            suffixes = ("", "_sum", "_count")
        else:
            suffixes = ("",)
        for suffix in suffixes:
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


async def test_every_metric_and_label_the_files_use_is_exported_by_a_live_node() -> None:
    series = exported(await live_exposition())
    assert "secauto_redis_up" in series and "secauto_job_duration_seconds_bucket" in series
    for where, expr in all_queries():
        read = names(expr)
        assert read.selectors, f"{where}: no metric in {expr!r}"
        known_labels = set(TARGET_LABELS)
        for metric in read.metrics:
            if metric in PROMETHEUS_SERIES:
                continue
            assert metric in series, f"{where}: {metric} is not exported by a node"
            known_labels |= series[metric]
        unknown = read.labels - known_labels
        assert not unknown, f"{where}: labels {sorted(unknown)} are on none of {sorted(read.metrics)}"


async def test_a_live_node_passes_promtool_check_metrics() -> None:
    # promtool's linter: naming conventions (units, _total on counters), help texts, duplicates.
    proc = await asyncio.create_subprocess_exec(promtool(), "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(proc.communicate((await live_exposition()).encode()), timeout=60)
    assert proc.returncode == 0, output.decode()
