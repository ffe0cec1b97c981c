"""The Kubernetes manifests: valid against Kubernetes' schemas (kubernetes-validate, strict) and in step
with the server they run."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from server.cli import build_parser, settings_from_args

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
pytestmark = pytest.mark.unit
KUBERNETES = "1.33"  # the oldest version the manifests are checked against; they use nothing newer


def _documents() -> list[dict]:
    files = sorted(DEPLOY.glob("*.yaml"))
    assert files, "no manifests"
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def _one(kind: str, name: str) -> dict:
    return next(d for d in _documents() if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.mark.parametrize("version", [KUBERNETES, "1.37"])
def test_every_manifest_validates(version: str) -> None:
    for document in _documents():
        kubernetes_validate.validate(document, version, strict=True)
    broken = copy.deepcopy(_one("StatefulSet", "backdrop"))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 135  # a misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_the_pods_run_what_the_server_accepts() -> None:
    pod = _one("StatefulSet", "backdrop")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    args = build_parser().parse_args(container["args"])
    settings = settings_from_args(args)
    assert settings.processes == 4 and settings.proxy == "haproxy" and settings.port == 8080
    # Kubernetes waits for the drain, then a little for closing what is left.
    assert float(env["BACKDROP_DRAIN_TIMEOUT"]) + 10 <= pod["terminationGracePeriodSeconds"]
    assert env["BACKDROP_ROUTE_PREFIX"] == "/p/$(POD_NAME)"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert "httpGet" not in container["livenessProbe"]  # /healthz is 503 on purpose while draining
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_every_pod_the_autoscaler_may_start_has_its_route() -> None:
    most = _one("HorizontalPodAutoscaler", "backdrop")["spec"]["maxReplicas"]
    paths = [p["path"] for r in _one("Ingress", "backdrop")["spec"]["rules"] for p in r["http"]["paths"]]
    for k in range(most):
        assert _one("Service", f"backdrop-{k}")["spec"]["selector"] == {
            "statefulset.kubernetes.io/pod-name": f"backdrop-{k}"
        }
        assert any(re.fullmatch(p, f"/p/backdrop-{k}/w/1/sessions/abc") for p in paths)
    # Prometheus scrapes each of a pod's processes.
    scrape = yaml.safe_load(_one("ConfigMap", "backdrop-prometheus")["data"]["prometheus.yml"])
    args = _one("StatefulSet", "backdrop")["spec"]["template"]["spec"]["containers"][0]["args"]
    processes = int(args[args.index("--processes") + 1])
    paths = [c["relabel_configs"][-1]["replacement"] for c in scrape["scrape_configs"]]
    assert paths == [f"/w/{n}/metrics" for n in range(1, processes + 1)]
    assert yaml.safe_load(_one("ConfigMap", "backdrop-prometheus")["data"]["rules.yaml"])["rules"]
