"""The Kubernetes manifests (deploy/kubernetes), checked offline: each overlay builds with kustomize; every object
validates against the Kubernetes API schemas of a current release (kubernetes-validate carries them) or, for KEDA's,
against KEDA's own CRD schema (tests/reference/keda); and what the manifests say of the processes — ports, probes,
the drain and its grace period, the stream the autoscaler reads, which Secret each service gets — agrees with the
settings classes and the contract, read from the code rather than repeated here."""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic_settings import BaseSettings

from bot.api.settings import ApiSettings
from bot.settings import ClientSettings, DiscordSettings, SlackSettings
from chatbus.keys import WORKER_GROUP, Keys
from inference.metrics import LIVE_QUERY
from inference.settings import WorkerSettings
from testkit.processes import ROOT
from testkit.settings import settings_of

KUBERNETES = ROOT / "deploy" / "kubernetes"
BUILDS = ["base", "overlays/autoscaled", "overlays/external-redis"]
KEDA = ROOT / "tests" / "reference" / "keda"
KUBERNETES_VERSION = "1.37.0"  # the newest release whose schemas kubernetes-validate carries (its version)
SETTINGS: dict[str, type[BaseSettings]] = {
    "worker": WorkerSettings,
    "discord": DiscordSettings,
    "slack": SlackSettings,
    "api": ApiSettings,
}


@cache
def built(target: str) -> list[dict[str, Any]]:
    """`kustomize build` of `target`: kubectl's (kubectl kustomize), else a kustomize binary."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(KUBERNETES / target)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(KUBERNETES / target)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed: the manifests cannot be built here")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [document for document in yaml.safe_load_all(done.stdout) if document]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    workload = next(o for o in objects if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] == name)
    return dict(workload["spec"]["template"]["spec"]["containers"][0])


def env(spec: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in spec.get("env", [])}


@cache
def keda_validators() -> dict[str, Draft202012Validator]:
    validators = {}
    for path in KEDA.glob("keda.sh_*.yaml"):
        crd = yaml.safe_load(path.read_text())
        [version] = [v for v in crd["spec"]["versions"] if v["served"]]
        kind = crd["spec"]["names"]["kind"]
        validators[f"{crd['spec']['group']}/{version['name']}:{kind}"] = Draft202012Validator(
            version["schema"]["openAPIV3Schema"]
        )
    return validators


@pytest.mark.parametrize("target", BUILDS)
def test_every_object_is_valid_for_the_kubernetes_api_or_kedas_crds(target: str) -> None:
    objects = built(target)
    assert {o["kind"] for o in objects} >= {"Deployment", "Secret", "NetworkPolicy", "PodDisruptionBudget"}
    for document in objects:
        where = f"{target}: {document['kind']} {document['metadata']['name']}"
        keda = keda_validators().get(f"{document['apiVersion']}:{document['kind']}")
        if keda is not None:
            problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in keda.iter_errors(document)]
            assert not problems, f"{where}: {problems}"
            continue
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc.message} at {'/'.join(map(str, exc.path))}") from None


def test_the_worker_agrees_with_its_settings_on_ports_probes_and_the_drain() -> None:
    objects = built("base")
    worker, defaults = container(objects, "worker"), settings_of(WorkerSettings)
    given = env(worker)
    port = int(given["METRICS_PORT"])
    assert port == defaults.metrics_port and worker["ports"] == [{"name": "metrics", "containerPort": port}]
    assert given["METRICS_HOST"] == "0.0.0.0", "reachable by the kubelet's probes and Prometheus"
    assert worker["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["livenessProbe"]["httpGet"] == {"path": f"/healthz?{LIVE_QUERY}", "port": "metrics"}
    drain = float(given["DRAIN_GRACE_S"])
    assert drain == defaults.drain_grace_s
    pod = find(objects, "Deployment", "worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= drain + 20, "the drain, then the model's release and the exit"
    assert "kill -TERM 1" in " ".join(worker["lifecycle"]["preStop"]["exec"]["command"]), "the preStop drains"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert find(objects, "PodDisruptionBudget", "worker")["spec"]["maxUnavailable"] == 1
    annotations = find(objects, "Deployment", "worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_the_autoscaler_reads_the_contracts_stream_and_outlasts_a_drain() -> None:
    objects, defaults = built("overlays/autoscaled"), settings_of(WorkerSettings)
    scaled = find(objects, "ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "worker" and scaled["minReplicaCount"] == 1
    assert scaled["cooldownPeriod"] > defaults.drain_grace_s, "a worker is let go only well after a drain"
    kinds = set()
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert (meta["stream"], meta["consumerGroup"]) == (Keys().questions, WORKER_GROUP)
        assert meta["address"].startswith("redis.kullm.svc"), "the overlay's namespace"
        auth = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])["spec"]
        assert auth["secretTargetRef"] == [{"parameter": "password", "name": "kullm-redis", "key": "REDIS_PASSWORD"}]
        if "pendingEntriesCount" in meta:
            kinds.add("pending")
            assert int(meta["pendingEntriesCount"]) < defaults.max_batch_size, "before a worker is full"
        if "lagCount" in meta:
            kinds.add("lag")
    assert kinds == {"pending", "lag"}
    keda = find(objects, "NetworkPolicy", "redis-from-keda")
    assert keda["metadata"]["namespace"] == "kullm"


def test_each_service_gets_only_its_own_secrets_keys_and_settings_it_reads() -> None:
    """Each container takes, key by key, only what its own Secret holds for it (and the Redis password); every key
    is a setting of that service; the Secrets carry no data, so an apply never overwrites values made with kubectl."""
    objects = built("base")
    config = find(objects, "ConfigMap", "kullm-config")["data"]
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    assert all("data" not in o and "stringData" not in o for o in secrets.values()), "apply must not blank values"
    keys = {name: set(o["metadata"]["annotations"]["kullm.io/keys"].split(",")) for name, o in secrets.items()}
    assert keys["kullm-redis"] == {"REDIS_PASSWORD"}
    for name, settings_class in SETTINGS.items():
        spec = container(objects, name)
        fields = set(settings_class.model_fields)
        assert not [s for s in spec.get("envFrom", []) if "secretRef" in s], f"{name}: whole Secrets, not keys"
        taken = {
            (v["secretKeyRef"]["name"], v["secretKeyRef"]["key"])
            for v in env(spec).values()
            if isinstance(v, dict) and "secretKeyRef" in v
        }
        own = {("kullm-redis", "REDIS_PASSWORD")} | {(f"kullm-{name}", key) for key in keys.get(f"kullm-{name}", ())}
        assert taken == own, f"{name} takes {taken}, its own are {own}"
        assert {key.lower() for _, key in taken} <= fields, f"{name} is given what it does not read"
        given = {k: v for k, v in {**config, **env(spec)}.items() if isinstance(v, str)}
        settings_of(settings_class, **{k.lower(): v for k, v in given.items() if k.lower() in fields})
    assert settings_of(ClientSettings, redis_url=config["REDIS_URL"]).redis_url.startswith("redis://redis:")
    api = container(objects, "api")
    assert int(env(api)["API_PORT"]) == settings_of(ApiSettings).api_port == api["ports"][0]["containerPort"]


def test_only_the_services_pods_reach_redis() -> None:
    objects = built("base")
    policy = find(objects, "NetworkPolicy", "redis-from-kullm-only")["spec"]
    [rule] = policy["ingress"]
    allowed = rule["from"][0]["podSelector"]["matchLabels"]
    assert rule["ports"] == [{"port": 6379, "protocol": "TCP"}]
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["name"] != "redis":
            labels = o["spec"]["template"]["metadata"]["labels"]
            assert allowed.items() <= labels.items(), f"{o['metadata']['name']} could not reach Redis"
    assert find(objects, "NetworkPolicy", "default-deny-ingress")["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    external = built("overlays/external-redis")
    assert not [o for o in external if o["metadata"]["name"] == "redis"], "no Redis deployed beside yours"
    assert find(external, "ConfigMap", "kullm-config")["data"]["REDIS_URL"].startswith("rediss://")


def test_redis_keeps_its_aof_on_a_volume_and_requires_its_password() -> None:
    redis = container(built("base"), "redis")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and '--requirepass "$REDIS_PASSWORD"' in command
    assert redis["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert redis["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_bots_serve_their_connection_for_prometheus_and_the_probe() -> None:
    objects = built("base")
    for name in ("discord", "slack"):
        spec = container(objects, name)
        port = int(env(spec)["ADAPTER_METRICS_PORT"])
        assert env(spec)["ADAPTER_METRICS_HOST"] == "0.0.0.0"
        assert spec["ports"] == [{"name": "metrics", "containerPort": port}]
        assert spec["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        annotations = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
