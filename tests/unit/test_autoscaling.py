"""deploy/kubernetes/autoscaling: the KEDA ScaledObject and the HPA alternative, as kustomize components.

No Kubernetes API is needed: the manifests are read as YAML and checked against the base (the
Deployment they scale, its drain time, the metrics Prometheus has). Where kubectl is installed, its
built-in kustomize also builds the base and an overlay with each component.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql import names
from tests.unit.test_deploy import K8S, STOP_OVERHEAD_S, k8s_objects, k8s_settings, secauto_container, yaml_docs

AUTOSCALING = K8S / "autoscaling"
COMPONENTS = ("keda", "hpa")
# Enough quiet time that a lull between two bursts does not remove pods that are needed again.
MIN_SCALE_DOWN_WINDOW_S = 300


def component(name: str) -> dict[str, Any]:
    return yaml_docs(AUTOSCALING / name / "kustomization.yaml")[0]


def component_objects(name: str) -> list[dict[str, Any]]:
    return [doc for resource in component(name)["resources"] for doc in yaml_docs(AUTOSCALING / name / resource)]


def scaled_object() -> dict[str, Any]:
    (obj,) = component_objects("keda")
    assert obj["apiVersion"] == "keda.sh/v1alpha1" and obj["kind"] == "ScaledObject"
    return obj


def hpa() -> dict[str, Any]:
    (obj,) = component_objects("hpa")
    assert obj["apiVersion"] == "autoscaling/v2" and obj["kind"] == "HorizontalPodAutoscaler"
    return obj


def behaviors() -> dict[str, dict[str, Any]]:
    """The HPA behaviour of each option (KEDA passes its own to the HPA it creates)."""
    return {"keda": scaled_object()["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
            "hpa": hpa()["spec"]["behavior"]}


def deployment_pod_spec() -> dict[str, Any]:
    return k8s_objects()[("Deployment", "secauto")]["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def prestop_seconds() -> float:
    command = secauto_container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return float(command[1])


# ---------------------------------------------------------------------------------------------------
# optional components on an unchanged base
# ---------------------------------------------------------------------------------------------------


def test_the_base_applies_without_an_autoscaler() -> None:
    base = yaml_docs(K8S / "kustomization.yaml")[0]
    assert not any(resource.startswith("autoscaling") for resource in base["resources"])
    kinds = {kind for kind, _ in k8s_objects()}
    assert not kinds & {"ScaledObject", "HorizontalPodAutoscaler"}  # clusters without KEDA apply it as is
    assert k8s_objects()[("Deployment", "secauto")]["spec"]["replicas"] == 3


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_option_is_a_component_that_hands_the_replica_count_to_the_autoscaler(name: str) -> None:
    kustomization = component(name)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert kustomization["kind"] == "Component"
    for resource in kustomization["resources"]:
        assert (AUTOSCALING / name / resource).is_file(), resource
    (patch,) = kustomization["patches"]
    assert patch["target"] == {"group": "apps", "version": "v1", "kind": "Deployment", "name": "secauto"}
    assert yaml.safe_load(patch["patch"]) == [{"op": "remove", "path": "/spec/replicas"}]
    # a JSON-patch "remove" fails on a missing path: the base must still set it
    assert "replicas" in k8s_objects()[("Deployment", "secauto")]["spec"]


# ---------------------------------------------------------------------------------------------------
# what they scale, and on what
# ---------------------------------------------------------------------------------------------------


def test_both_options_scale_the_secauto_deployment_between_the_same_bounds() -> None:
    base_replicas = k8s_objects()[("Deployment", "secauto")]["spec"]["replicas"]
    keda, plain = scaled_object()["spec"], hpa()["spec"]
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "secauto"}
    assert keda["scaleTargetRef"] == target and plain["scaleTargetRef"] == target
    assert keda["minReplicaCount"] == plain["minReplicas"] == base_replicas  # >= 2: leader failover
    assert keda["maxReplicaCount"] == plain["maxReplicas"] > base_replicas
    assert behaviors()["keda"] == behaviors()["hpa"]


def test_keda_scales_on_queue_per_node_and_on_load_from_prometheus() -> None:
    triggers = {trigger["name"]: trigger for trigger in scaled_object()["spec"]["triggers"]}
    assert set(triggers) == {"queue-per-node", "load"}
    for trigger in triggers.values():
        assert trigger["type"] == "prometheus"
        # ceil(value / threshold) pods: both queries give a cluster total, not a per-pod value
        assert trigger["metricType"] == "AverageValue"
        metadata = trigger["metadata"]
        assert metadata["serverAddress"].startswith("http")
        assert float(metadata["threshold"]) > 0
        # no result (Prometheus lost the pods) is an error, on which the HPA holds, rather than 0
        assert metadata["ignoreNullValues"] == "false"
        (selector,) = names(metadata["query"]).selectors
        assert selector.matchers["job"] == ("=", "secauto")  # the job of deploy/prometheus/prometheus.yml
        assert ">= 0" in metadata["query"]  # drops the NaN of a node that cannot read Redis
    (queue,) = names(triggers["queue-per-node"]["metadata"]["query"]).selectors
    # jobs ready to start: a batch submitted with run_at tomorrow must not scale the cluster today
    assert queue.metric == "secauto_queue_ready" and queue.aggregations == ["max"]
    (load,) = names(triggers["load"]["metadata"]["query"]).selectors
    assert load.metric == "secauto_node_load" and load.aggregations == ["sum"]
    assert 0 < float(triggers["load"]["metadata"]["threshold"]) < 1  # a share of each node's slots


def test_the_hpa_reads_the_metrics_prometheus_adapter_is_configured_to_serve() -> None:
    adapter = yaml.safe_load((AUTOSCALING / "hpa" / "prometheus-adapter-values.yaml").read_text(encoding="utf-8"))
    served = {kind: {rule["name"]["as"]: rule for rule in adapter["rules"][kind]} for kind in ("custom", "external")}
    metrics = {metric["type"]: metric for metric in hpa()["spec"]["metrics"]}
    assert set(metrics) == {"External", "Pods"}
    external = metrics["External"]["external"]
    assert external["metric"]["name"] in served["external"]
    assert external["target"]["type"] == "AverageValue"
    queue_rule = served["external"][external["metric"]["name"]]
    # The HPA adds up every series an external metric returns: the adapter must return one per namespace.
    query = queue_rule["metricsQuery"].replace("<<.Series>>", "secauto_queue_ready").replace("<<.LabelMatchers>>", "")
    assert names(query).selectors[0].aggregations == ["max"] and "by (namespace)" in query
    assert set(external["metric"]["selector"]["matchLabels"]) <= {"job", "namespace"}
    pods = metrics["Pods"]["pods"]
    assert pods["metric"]["name"] in served["custom"]
    assert served["custom"][pods["metric"]["name"]]["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert pods["target"]["type"] == "AverageValue"
    # Both options use the same thresholds, so one explanation (deploy/README.md) covers them.
    triggers = {trigger["name"]: trigger["metadata"] for trigger in scaled_object()["spec"]["triggers"]}
    assert quantity(external["target"]["averageValue"]) == float(triggers["queue-per-node"]["threshold"])
    assert quantity(pods["target"]["averageValue"]) == float(triggers["load"]["threshold"])


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity such as ``700m`` or ``10`` as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# ---------------------------------------------------------------------------------------------------
# scale-in drains
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMPONENTS)
def test_scale_in_removes_one_draining_pod_at_a_time_after_a_quiet_period(name: str, tmp_path: Path) -> None:
    scale_down = behaviors()[name]["scaleDown"]
    grace_period = deployment_pod_spec()["terminationGracePeriodSeconds"]
    shutdown_grace = k8s_settings(tmp_path).config.server.shutdown_grace
    # SIGTERM lets running jobs finish for shutdown_grace, then hands the rest back; the kubelet must
    # not kill the pod before that (the same bound as the rolling updates of test_deploy.py).
    assert grace_period >= prestop_seconds() + shutdown_grace + STOP_OVERHEAD_S
    assert scale_down["stabilizationWindowSeconds"] >= MIN_SCALE_DOWN_WINDOW_S
    assert scale_down["policies"], "an unbounded scale-down could drain every extra pod at once"
    for policy in scale_down["policies"]:
        assert policy["type"] == "Pods" and policy["value"] == 1
        # the previous pod has finished draining before the next one goes
        assert policy["periodSeconds"] >= grace_period
    scale_up = behaviors()[name]["scaleUp"]
    assert scale_up["stabilizationWindowSeconds"] <= 60  # a backlog is answered at once


# ---------------------------------------------------------------------------------------------------
# kubectl's kustomize, where kubectl is installed
# ---------------------------------------------------------------------------------------------------


def kustomize(path: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (the static checks above still run)")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "KUBECONFIG": os.devnull})
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.mark.parametrize("name", COMPONENTS)
def test_kustomize_builds_the_base_with_each_component(name: str, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S, overlay)],
        "components": [os.path.relpath(AUTOSCALING / name, overlay)],
    }))
    built = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(overlay)}
    deployment = built[("Deployment", "secauto")]
    assert "replicas" not in deployment["spec"]
    autoscaler = built[("ScaledObject" if name == "keda" else "HorizontalPodAutoscaler", "secauto")]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    base = {(doc["kind"], doc["metadata"]["name"]): doc for doc in kustomize(K8S)}
    assert base[("Deployment", "secauto")]["spec"]["replicas"] == 3
    assert set(built) - set(base) == {(autoscaler["kind"], "secauto")}
