"""Every overlay renders, validates against the Kubernetes schemas (strict), is hardened,
and gives the application a complete, valid distributed configuration."""

from __future__ import annotations

import ipaddress
import os
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from tests.deploy.conftest import (
    K8S,
    LONG_JOBS,
    OVERLAYS,
    Doc,
    by_prefix,
    find,
    one,
    pod_spec,
    render_with,
    rendered,
    secret_data,
)

from imageblur.config import Settings, load_settings
from imageblur.domain import JOB_KINDS, kind_queue
from imageblur.entrypoints.startup import check_api, check_worker
from imageblur.webhooks.addresses import REFUSED

# Custom resources: no schema ships with kubernetes-validate. Only these kinds are skipped;
# any other object without a schema fails the test.
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# the oldest Kubernetes release we support, and the newest the validator knows
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# Objects that the manifests reference but that something else creates.
EXTERNAL = {
    ("Secret", "imageblur-pg-app"): "CloudNativePG, for the Cluster imageblur-pg",
    ("ConfigMap", "rds-ca-bundle"): "the operator (aws overlay: the RDS CA bundle)",
    ("Secret", "imageblur-tokens"): "the operator (kubectl create secret; dev: make deploy)",
}
# What those Secrets hold at run time (tokens as scripts/tokens.sh makes them).
EXTERNAL_SECRET_VALUES = {
    "imageblur-pg-app": {
        "uri": "postgresql://imageblur:x@imageblur-pg-rw.imageblur:5432/imageblur",
    },
    "imageblur-tokens": {
        "IMAGEBLUR_API_TOKEN": "a" * 64,
        "IMAGEBLUR_METRICS_TOKEN": "b" * 64,
    },
}
TOKENS_SECRET = "imageblur-tokens"
TOKEN_KEYS = {"api": {"IMAGEBLUR_API_TOKEN", "IMAGEBLUR_METRICS_TOKEN"}}
TOKEN_KEYS["worker"] = {"IMAGEBLUR_METRICS_TOKEN"}
# Services that exist at run time without a manifest of ours (made by an operator).
EXTERNAL_SERVICES = {"imageblur-pg-rw", "imageblur-pg-ro", "imageblur-pg-r"}

APP_COMPONENTS = ("api", "worker", "migrate")
FIELDS = {f"IMAGEBLUR_{name.upper()}" for name in Settings.model_fields}


def test_every_overlay_is_found() -> None:
    assert {"dev", "ha", "aws"} <= set(OVERLAYS)


def test_renders_into_one_namespace(docs: list[Doc]) -> None:
    assert docs
    namespaced = [d for d in docs if d["kind"] not in {"Namespace"}]
    assert {d["metadata"].get("namespace") for d in namespaced} == {"imageblur"}
    assert one(docs, "Namespace", "imageblur")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_validates_against_kubernetes_schemas(docs: list[Doc], version: str) -> None:
    errors = []
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: no schema: {exc}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def _containers(spec: Doc) -> list[Doc]:
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def test_every_pod_is_hardened(docs: list[Doc]) -> None:
    problems = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod_sc = spec.get("securityContext") or {}
        if pod_sc.get("runAsNonRoot") is not True:
            problems.append(f"{where}: runAsNonRoot")
        if (pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile RuntimeDefault")
        for c in _containers(spec):
            sc = c.get("securityContext") or {}
            name = f"{where}[{c['name']}]"
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: readOnlyRootFilesystem")
            if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
                problems.append(f"{name}: capabilities drop ALL")
            resources = c.get("resources") or {}
            for part, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
                if key not in (resources.get(part) or {}):
                    problems.append(f"{name}: resources.{part}.{key}")
    assert not problems, "\n".join(problems)


def test_references_resolve(docs: list[Doc]) -> None:
    missing = []
    for doc in docs:
        spec = pod_spec(doc)
        if spec is None:
            continue
        refs: list[tuple[str, str]] = []
        for c in _containers(spec):
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    refs.append(("ConfigMap", src["configMapRef"]["name"]))
                if "secretRef" in src:
                    refs.append(("Secret", src["secretRef"]["name"]))
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.append(("Secret", ref["name"]))
        for vol in spec.get("volumes") or []:
            if "configMap" in vol:
                refs.append(("ConfigMap", vol["configMap"]["name"]))
            if "secret" in vol:
                refs.append(("Secret", vol["secret"]["secretName"]))
        if spec.get("serviceAccountName"):
            refs.append(("ServiceAccount", spec["serviceAccountName"]))
        for kind, name in refs:
            if (kind, name) not in EXTERNAL and not find(docs, kind, name):
                missing.append(f"{doc['kind']}/{doc['metadata']['name']} -> {kind}/{name}")
    assert not missing, "\n".join(missing)


# --- the application's settings ------------------------------------------------------


def _app_workloads(docs: list[Doc]) -> dict[str, Doc]:
    found = {}
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/name") == "imageblur" and pod_spec(doc) is not None:
            found[labels["app.kubernetes.io/component"]] = doc
    return found


def _secret_values(docs: list[Doc], name: str) -> dict[str, str]:
    secret = find(docs, "Secret", name)
    return secret_data(secret[0]) if secret else EXTERNAL_SECRET_VALUES[name]


def _effective_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The environment a container gets: envFrom first, then `env` (which wins)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            env.update(one(docs, "ConfigMap", src["configMapRef"]["name"])["data"])
        if "secretRef" in src:
            env.update(_secret_values(docs, src["secretRef"]["name"]))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        env[item["name"]] = _secret_values(docs, ref["name"])[ref["key"]]
    return env


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith("IMAGEBLUR_")]:
            m.delenv(key)
        for key, value in env.items():
            m.setenv(key, as_set(value))
        return load_settings()


def as_set(value: str) -> str:
    """An example Secret's value as an operator sets it: the settings refuse the
    placeholder CHANGE_ME itself."""
    return value.replace("CHANGE_ME", "set-by-the-operator")


def test_the_application_workloads_exist(docs: list[Doc]) -> None:
    assert set(_app_workloads(docs)) == set(APP_COMPONENTS)


def test_every_imageblur_variable_is_a_setting(docs: list[Doc]) -> None:
    unknown = set()
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            names: list[str] = list(doc.get("data") or {})
        elif doc["kind"] == "Secret":
            names = list(secret_data(doc))
        elif pod_spec(doc) is not None:
            names = [
                e["name"] for c in _containers(pod_spec(doc) or {}) for e in c.get("env") or []
            ]
        else:
            continue
        unknown |= {n for n in names if n.startswith("IMAGEBLUR_") and n not in FIELDS}
    assert not unknown, f"not fields of imageblur.config.Settings: {sorted(unknown)}"


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _services(docs: list[Doc]) -> set[str]:
    return {d["metadata"]["name"] for d in find(docs, "Service")} | EXTERNAL_SERVICES


@pytest.mark.parametrize("component", APP_COMPONENTS)
def test_distributed_settings_are_complete(
    docs: list[Doc], component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = _app_workloads(docs)[component]
    container = pod_spec(workload)["containers"][0]  # type: ignore[index]
    env = _effective_env(docs, container)
    # set explicitly, never left to a default made for the embedded mode
    required = {
        "IMAGEBLUR_STORE",
        "IMAGEBLUR_REPOSITORY",
        "IMAGEBLUR_QUEUE",
        "IMAGEBLUR_POSTGRES_DSN",
        "IMAGEBLUR_RABBITMQ_URL",
        "IMAGEBLUR_S3_INPUT_BUCKET",
        "IMAGEBLUR_S3_OUTPUT_BUCKET",
        "IMAGEBLUR_S3_REGION",
    }
    assert required <= set(env), f"missing: {sorted(required - set(env))}"
    settings = _settings(monkeypatch, env)
    assert (settings.store, settings.repository, settings.queue) == ("s3", "postgres", "rabbitmq")

    in_cluster = {d["metadata"]["name"] for d in find(docs, "StatefulSet")}
    local = {"127.0.0.1", "localhost", "::1"}
    dsn_host = _host(settings.postgres_dsn.get_secret_value())
    amqp_host = _host(settings.rabbitmq_url.get_secret_value())
    assert dsn_host not in local and amqp_host not in local
    if "rabbitmq" in in_cluster:
        assert amqp_host in _services(docs), f"RabbitMQ host {amqp_host} is no Service"
    if find(docs, "Cluster") or "postgres" in in_cluster:
        assert dsn_host.split(".")[0] in _services(docs), f"PostgreSQL host {dsn_host}"
    if "minio" in in_cluster:
        assert settings.s3_endpoint_url, "in-cluster MinIO needs IMAGEBLUR_S3_ENDPOINT_URL"
        assert _host(settings.s3_endpoint_url) in _services(docs)
        assert settings.s3_addressing_style == "path"
        assert settings.s3_access_key_id is not None
    else:
        # AWS S3: the standard credential chain (IRSA), no endpoint, no static keys
        assert settings.s3_endpoint_url is None
        assert settings.s3_access_key_id is None


def test_api_probes_port_and_host(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    api = _app_workloads(docs)["api"]
    container = pod_spec(api)["containers"][0]  # type: ignore[index]
    settings = _settings(monkeypatch, _effective_env(docs, container))
    assert settings.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == settings.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    service = one(docs, "Service", "imageblur-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_api_scaling_and_disruption(docs: list[Doc]) -> None:
    hpa = one(docs, "HorizontalPodAutoscaler", "imageblur-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "imageblur-api"
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    for name in ("imageblur-api", "imageblur-worker"):
        pdb = one(docs, "PodDisruptionBudget", name)
        workload = one(docs, "Deployment", name)
        assert pdb["spec"]["selector"] == workload["spec"]["selector"]
        # HPA / KEDA own the replica count; a fixed one would fight them on every apply
        assert "replicas" not in workload["spec"]


def test_worker_grace_period_covers_a_job(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    worker = _app_workloads(docs)["worker"]
    spec: Any = pod_spec(worker)
    settings = _settings(monkeypatch, _effective_env(docs, spec["containers"][0]))
    assert spec["terminationGracePeriodSeconds"] >= settings.shutdown_grace_s + 15
    cpu_limit = spec["containers"][0]["resources"]["limits"]["cpu"]
    cores = float(cpu_limit[:-1]) / 1000 if cpu_limit.endswith("m") else float(cpu_limit)
    assert 1 <= settings.detector_threads <= max(1, cores)


def test_worker_liveness_probe_fits_the_lease(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job touches the heartbeat at every lease renewal (a third of the lease): the probe
    tolerates a whole lease without one, so it restarts a worker only when its job could
    be taken over anyway, never a slow one that renews."""
    container: Any = pod_spec(_app_workloads(docs)["worker"])["containers"][0]  # type: ignore[index]
    settings = _settings(monkeypatch, _effective_env(docs, container))
    assert container["livenessProbe"]["exec"]["command"] == ["imageblur", "alive"]
    assert settings.heartbeat_file is not None
    assert settings.heartbeat_max_age_s >= settings.lease_s
    assert settings.heartbeat_max_age_s >= 10 * settings.receive_timeout_s


def test_worker_readiness_probe_asks_its_metrics_listener(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not ready while it cannot open the originals: a rollout with the wrong key stops
    at its first new pod (maxUnavailable 0) instead of replacing every good worker."""
    worker = _app_workloads(docs)["worker"]
    container: Any = pod_spec(worker)["containers"][0]  # type: ignore[index]
    settings = _settings(monkeypatch, _effective_env(docs, container))
    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[probe["port"]] == settings.metrics_port
    assert settings.host == "0.0.0.0"  # the kubelet probes the pod's address
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_keda_scales_workers_on_the_job_queue(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    scaled = one(docs, "ScaledObject", "imageblur-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "imageblur-worker"
    worker = _app_workloads(docs)["worker"]
    settings = _settings(
        monkeypatch,
        _effective_env(docs, pod_spec(worker)["containers"][0]),  # type: ignore[index]
    )
    triggers = scaled["spec"]["triggers"]
    queues = {t["metadata"]["queueName"] for t in triggers}
    # every picture kind's queue: the main one, and those of pictures with options
    assert queues == {kind_queue(settings.rabbitmq_queue, k) for k in settings.job_kinds()}
    assert all(t["type"] == "rabbitmq" for t in triggers)
    assert len({t["authenticationRef"]["name"] for t in triggers}) == 1
    trigger = triggers[0]
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host"
    secret = one(docs, "Secret", ref["name"])
    assert as_set(secret_data(secret)[ref["key"]]) == settings.rabbitmq_url.get_secret_value()


def test_migrate_job(docs: list[Doc]) -> None:
    job = one(docs, "Job", "imageblur-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"OnFailure", "Never"}


def test_network_policies_deny_by_default(docs: list[Doc]) -> None:
    deny = one(docs, "NetworkPolicy", "default-deny-all")
    assert deny["spec"]["podSelector"] == {}
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    # each back end that runs in the cluster admits connections through a policy of its own
    backends = {
        (d["spec"]["template"]["metadata"]["labels"] or {}).get("imageblur.io/backend")
        for d in find(docs, "StatefulSet")
    } - {None}
    if find(docs, "Cluster"):
        backends.add("postgres")
    guarded = {
        (p["spec"]["podSelector"].get("matchLabels") or {}).get("imageblur.io/backend")
        for p in find(docs, "NetworkPolicy")
        if "Ingress" in p["spec"]["policyTypes"]
    }
    assert backends <= guarded, f"back ends without an ingress policy: {backends - guarded}"


def test_ha_back_ends_survive_one_node() -> None:
    docs = rendered("ha")
    rabbit = one(docs, "StatefulSet", "rabbitmq")
    assert rabbit["spec"]["replicas"] == 3
    anti = rabbit["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert one(docs, "PodDisruptionBudget", "rabbitmq")["spec"]["maxUnavailable"] == 1
    conf = by_prefix(docs, "ConfigMap", "rabbitmq-config")
    assert conf is not None
    assert "rabbit_peer_discovery_k8s" in conf["data"]["rabbitmq.conf"]
    assert "default_queue_type = quorum" in conf["data"]["rabbitmq.conf"]
    cluster = one(docs, "Cluster", "imageblur-pg")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["affinity"]["podAntiAffinityType"] == "required"


def test_connection_pools_fit_postgres(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> None:
    """At full scale, every pool at its largest stays under max_connections (in-cluster PG)."""
    clusters = find(docs, "Cluster")
    if clusters:
        params = clusters[0]["spec"].get("postgresql", {}).get("parameters", {})
        max_connections = int(params.get("max_connections", 100))
    elif find(docs, "StatefulSet", "postgres"):
        max_connections = 100  # the image's default
    else:
        # PostgreSQL outside the cluster (RDS): the overlay's pools must fit the smallest
        # instance docs/operations.md asks for (max_connections >= 200).
        max_connections = 200
    workloads = _app_workloads(docs)
    hpa = one(docs, "HorizontalPodAutoscaler", "imageblur-api")
    scaled = one(docs, "ScaledObject", "imageblur-worker")
    most = {"api": hpa["spec"]["maxReplicas"], "worker": scaled["spec"]["maxReplicaCount"]}
    most["migrate"] = 1
    total = 0
    for component, count in most.items():
        container = pod_spec(workloads[component])["containers"][0]  # type: ignore[index]
        settings = _settings(monkeypatch, _effective_env(docs, container))
        total += count * settings.postgres_pool_max
    reserved = 10  # superuser, replication and the operator's own connections
    assert total + reserved <= max_connections, f"{total} pooled connections"


def test_deploy_phase_one_migrates_before_any_new_pod(docs: list[Doc]) -> None:
    """`make deploy` first applies what the selector
    app.kubernetes.io/component!=api,app.kubernetes.io/component!=worker keeps: that must
    be everything the migrate Job needs, and none of the API or worker objects."""
    first = [
        d
        for d in docs
        if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
        not in {"api", "worker"}
    ]
    names = {(d["kind"], d["metadata"]["name"]) for d in first}
    job = one(first, "Job", "imageblur-migrate")
    spec: Any = pod_spec(job)
    needed = {("ServiceAccount", spec["serviceAccountName"]), ("Namespace", "imageblur")}
    for src in spec["containers"][0]["envFrom"]:
        kind = "ConfigMap" if "configMapRef" in src else "Secret"
        needed.add((kind, (src.get("configMapRef") or src.get("secretRef"))["name"]))
    assert needed <= names
    assert not any(
        d["kind"] in {"Deployment", "ScaledObject"}
        for d in first
        if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "imageblur"
    )


# --- tokens and who may reach the API (issue 21: fail closed) --------------------------


def _env_items(container: Doc) -> dict[str, Doc]:
    return {item["name"]: item for item in container.get("env") or []}


@pytest.mark.parametrize("component", sorted(TOKEN_KEYS))
def test_tokens_come_from_the_operators_secret(docs: list[Doc], component: str) -> None:
    """Named keys of a Secret that no file of the repository holds: a Secret without them
    keeps the pod from starting, so an unedited deploy never runs open."""
    container: Any = pod_spec(_app_workloads(docs)[component])["containers"][0]  # type: ignore[index]
    env = _env_items(container)
    for key in TOKEN_KEYS[component]:
        ref = (env[key].get("valueFrom") or {}).get("secretKeyRef")
        assert ref == {"name": TOKENS_SECRET, "key": key}, f"{component}: {key} is {env[key]}"
    assert not find(docs, "Secret", TOKENS_SECRET), "the tokens Secret is rendered"
    from_secret = [
        src["secretRef"]["name"] for src in container.get("envFrom") or [] if "secretRef" in src
    ]
    # the reviewers' tokens (review on) come with the whole Secret, to the API alone
    if component == "api":
        assert TOKENS_SECRET in from_secret
    # the worker calls no API: it gets no API or reviewer token
    if component == "worker":
        assert TOKENS_SECRET not in from_secret
        assert not any("API_TOKEN" in k or "REVIEWER_TOKEN" in k for k in env)


def test_no_token_is_shipped(docs: list[Doc]) -> None:
    """No ConfigMap carries a token; no rendered Secret carries one other than a CHANGE_ME
    placeholder (which the application refuses); no container sets one literally."""
    problems = []
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ConfigMap":
            problems += [f"{where}: {k}" for k in doc.get("data") or {} if "TOKEN" in k]
        if doc["kind"] == "Secret":
            problems += [
                f"{where}: {k}"
                for k, v in secret_data(doc).items()
                if "TOKEN" in k and "CHANGE_ME" not in v
            ]
        for c in _containers(pod_spec(doc) or {"containers": []}):
            problems += [
                f"{where}[{c['name']}]: {name} set literally"
                for name, item in _env_items(c).items()
                if "TOKEN" in name and "value" in item
            ]
    assert not problems, "\n".join(problems)


def test_probes_need_no_token(docs: list[Doc]) -> None:
    """A kubelet sends no Secret: every HTTP probe of the API and the workers asks a path
    the token check leaves open, and the worker's liveness is the heartbeat file."""
    workloads = _app_workloads(docs)
    for component in ("api", "worker"):
        container: Any = pod_spec(workloads[component])["containers"][0]  # type: ignore[index]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe and "httpGet" in probe:
                assert probe["httpGet"]["path"] in {"/healthz", "/readyz"}, (component, kind)
                assert not probe["httpGet"].get("httpHeaders"), (component, kind)
    worker: Any = pod_spec(workloads["worker"])["containers"][0]  # type: ignore[index]
    assert worker["livenessProbe"]["exec"]["command"] == ["imageblur", "alive"]


def _selects(policy: Doc, labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        if expr["operator"] != "In" or labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


INGRESS_PEER = {"namespaceSelector": {"matchLabels": {"imageblur.io/ingress": "true"}}}
PROMETHEUS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
}


def test_api_admits_only_labelled_namespaces_and_prometheus(docs: list[Doc]) -> None:
    api = _app_workloads(docs)["api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    peers = []
    for policy in find(docs, "NetworkPolicy"):
        if "Ingress" not in policy["spec"]["policyTypes"] or not _selects(policy, labels):
            continue
        for rule in policy["spec"].get("ingress") or []:
            # a rule without `from` admits every source
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to all"
            assert rule.get("ports") == [{"port": 8080, "protocol": "TCP"}]
            peers += rule["from"]
    assert INGRESS_PEER in peers
    unexpected = [p for p in peers if p not in (INGRESS_PEER, PROMETHEUS_PEER)]
    assert not unexpected, f"the API admits {unexpected}"
    # Prometheus only where it scrapes the API
    assert (PROMETHEUS_PEER in peers) == bool(find(docs, "ServiceMonitor"))


# The overlays that take the monitoring component (the others have no monitors).
MONITORED = [
    o for o in OVERLAYS if "monitoring" in (K8S / "overlays" / o / "kustomization.yaml").read_text()
]


@pytest.mark.parametrize("overlay", MONITORED)
def test_prometheus_sends_the_metrics_token(docs: list[Doc]) -> None:
    """The ServiceMonitor (API) and PodMonitor (workers) send the token the pods check,
    from the same Secret key."""
    monitors = [(m, "endpoints") for m in find(docs, "ServiceMonitor")]
    monitors += [(m, "podMetricsEndpoints") for m in find(docs, "PodMonitor")]
    assert monitors, "no ServiceMonitor or PodMonitor"
    workloads = _app_workloads(docs)
    for monitor, field in monitors:
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        container: Any = pod_spec(workloads[component])["containers"][0]  # type: ignore[index]
        ref = _env_items(container)["IMAGEBLUR_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]
        for endpoint in monitor["spec"][field]:
            auth = endpoint.get("authorization") or {}
            assert auth.get("type") == "Bearer", monitor["metadata"]["name"]
            assert auth["credentials"] == ref, monitor["metadata"]["name"]
            assert "bearerTokenFile" not in endpoint and "params" not in endpoint


def test_a_worker_metrics_port_is_guarded(docs: list[Doc]) -> None:
    """A worker whose metrics listener is on the pod's address has the metrics token, and
    no policy lets anything but Prometheus reach that port (the kubelet's probes are not
    subject to NetworkPolicies)."""
    worker = _app_workloads(docs)["worker"]
    container: Any = pod_spec(worker)["containers"][0]  # type: ignore[index]
    port_setting = _effective_env(docs, container).get("IMAGEBLUR_METRICS_PORT")
    if port_setting is None:
        pytest.skip("no worker metrics listener in this overlay")
    assert "secretKeyRef" in _env_items(container)["IMAGEBLUR_METRICS_TOKEN"]["valueFrom"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    peers = [
        peer
        for policy in find(docs, "NetworkPolicy")
        if "Ingress" in policy["spec"]["policyTypes"] and _selects(policy, labels)
        for rule in policy["spec"].get("ingress") or []
        if not rule.get("ports") or {"port": int(port_setting), "protocol": "TCP"} in rule["ports"]
        for peer in rule.get("from") or [{"everyone": True}]
    ]
    assert all(peer == PROMETHEUS_PEER for peer in peers), peers
    if find(docs, "PodMonitor"):
        assert peers == [PROMETHEUS_PEER]


def test_the_workloads_pass_their_start_up_checks(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `imageblur api` and `imageblur worker` check before they serve (an open
    address needs a token, review needs reviewers) holds for the settings each pod gets."""
    workloads = _app_workloads(docs)
    for component, check in (("api", check_api), ("worker", check_worker)):
        container: Any = pod_spec(workloads[component])["containers"][0]  # type: ignore[index]
        check(_settings(monkeypatch, _effective_env(docs, container)))


# --- the long-job workers (components/long-jobs, opt-in; issue 24, item 6) ------------------

# The video kind (domain.JOB_KINDS), the first long kind: the component's workers and
# trigger are checked against it.
VIDEO = JOB_KINDS["video"]
_with_long: dict[str, list[Doc]] = {}


@pytest.fixture
def video_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(JOB_KINDS, "video", VIDEO)  # type: ignore[arg-type]


@pytest.fixture
def long_docs(overlay: str, tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    """The overlay with the long-jobs component, as an operator enables it."""
    if overlay not in _with_long:
        root = tmp_path_factory.mktemp(f"long-{overlay}")
        _with_long[overlay] = render_with(overlay, LONG_JOBS, root)
    return _with_long[overlay]


def test_no_overlay_enables_the_long_workers_yet(docs: list[Doc]) -> None:
    """Videos are off in the base's settings (IMAGEBLUR_VIDEO, on by default elsewhere):
    long workers would have only bucket batches' items to take."""
    assert not find(docs, "Deployment", "imageblur-worker-long")
    assert load_settings(worker_kinds="long", video=True).job_kinds() == frozenset(
        {"video", "video_options", "batch"}
    )
    configs = [d for d in find(docs, "ConfigMap") if d["data"].get("IMAGEBLUR_STORE")]
    assert [c["data"]["IMAGEBLUR_VIDEO"] for c in configs] == ["false"]
    # Without the switch a long worker takes only bucket batches' items.
    assert load_settings(worker_kinds="long", video=False).job_kinds() == {"batch"}


def test_the_long_workers_render_valid_and_hardened(long_docs: list[Doc]) -> None:
    test_validates_against_kubernetes_schemas(long_docs, K8S_VERSIONS[0])
    test_every_pod_is_hardened(long_docs)
    test_references_resolve(long_docs)
    test_every_imageblur_variable_is_a_setting(long_docs)
    test_no_token_is_shipped(long_docs)
    test_probes_need_no_token(long_docs)
    assert set(_app_workloads(long_docs)) == {*APP_COMPONENTS, "worker-long"}


def test_the_long_workers_work_in_a_bounded_folder_of_their_own(
    long_docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    test_every_worker_works_in_a_bounded_folder_of_its_own(long_docs, monkeypatch)


def test_the_two_pools_take_their_kinds(
    long_docs: list[Doc], video_kind: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    workloads = _app_workloads(long_docs)
    pictures, long = (
        _worker_settings(long_docs, workloads[c], monkeypatch) for c in ("worker", "worker-long")
    )
    assert pictures.job_kinds() == {"detect", "render", "options", "options_render"}
    assert long.job_kinds() == {"video", "video_options", "batch"}
    assert long.worker_threads == 1  # one long job per pod; KEDA scales the pods
    for settings in (pictures, long):
        check_worker(settings)  # both start
    assert workloads["worker-long"]["spec"]["selector"] != workloads["worker"]["spec"]["selector"]


def test_a_scale_in_waits_for_the_long_job(
    long_docs: list[Doc], video_kind: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM lets the job in hand finish for IMAGEBLUR_SHUTDOWN_GRACE_S: it covers the
    longest job of every kind the pool takes, and Kubernetes waits longer than that."""
    worker = one(long_docs, "Deployment", "imageblur-worker-long")
    spec: Any = pod_spec(worker)
    settings = _worker_settings(long_docs, worker, monkeypatch)
    longest = max(JOB_KINDS[k].longest_s or 0.0 for k in settings.job_kinds())
    assert settings.shutdown_grace_s >= longest > 0
    assert spec["terminationGracePeriodSeconds"] >= settings.shutdown_grace_s + 15
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert settings.heartbeat_max_age_s >= settings.lease_s  # the probe fits the lease
    pdb = one(long_docs, "PodDisruptionBudget", "imageblur-worker-long")
    assert pdb["spec"]["selector"] == worker["spec"]["selector"]
    assert pdb["spec"]["maxUnavailable"] == 1


def test_keda_scales_the_long_workers_on_the_long_queues(
    long_docs: list[Doc], video_kind: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    scaled = one(long_docs, "ScaledObject", "imageblur-worker-long")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "imageblur-worker-long"
    settings = _worker_settings(
        long_docs, one(long_docs, "Deployment", "imageblur-worker-long"), monkeypatch
    )
    queues = {t["metadata"]["queueName"] for t in scaled["spec"]["triggers"]}
    assert queues == {kind_queue(settings.rabbitmq_queue, k) for k in settings.job_kinds()}
    assert settings.rabbitmq_queue not in queues  # never the pictures' queue
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["type"] == "rabbitmq"
        assert one(long_docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    # a slow scale-in: one pod at a time, after a quiet spell
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
    # the pictures' workers keep their own scaler, on the main queue
    test_keda_scales_workers_on_the_job_queue(long_docs, monkeypatch)


def test_the_long_workers_reach_what_the_workers_reach(long_docs: list[Doc]) -> None:
    """Every NetworkPolicy and monitor that applies to the pictures' workers applies to
    the long ones: their back ends admit them and Prometheus scrapes them."""
    labels = {
        c: _app_workloads(long_docs)[c]["spec"]["template"]["metadata"]["labels"]
        for c in ("worker", "worker-long")
    }
    for doc in long_docs:
        for where, selector in _pod_selectors(doc):
            picks = {c: _label_selector_picks(selector, labels[c]) for c in labels}
            assert picks["worker"] == picks["worker-long"], f"{doc['metadata']['name']}: {where}"


def _worker_settings(docs: list[Doc], workload: Doc, monkeypatch: pytest.MonkeyPatch) -> Settings:
    container = pod_spec(workload)["containers"][0]  # type: ignore[index]
    return _settings(monkeypatch, _effective_env(docs, container))


def _pod_selectors(doc: Doc) -> list[tuple[str, Doc]]:
    """The pod selectors of a NetworkPolicy (its own, and its peers') or a PodMonitor."""
    if doc["kind"] == "PodMonitor":
        return [("selector", doc["spec"]["selector"])]
    if doc["kind"] != "NetworkPolicy":
        return []
    found = [("podSelector", doc["spec"]["podSelector"])]
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for n, rule in enumerate(doc["spec"].get(direction) or []):
            for peer in rule.get(peers) or []:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    found.append((f"{direction}[{n}]", peer["podSelector"]))
    return found


def _label_selector_picks(selector: Doc, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector picks a pod with `labels` ({} picks all)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


_QUANTITY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def _bytes(quantity: str) -> int:
    unit = quantity[-2:]
    return int(quantity[:-2]) * _QUANTITY[unit] if unit in _QUANTITY else int(quantity)


def test_every_worker_works_in_a_bounded_folder_of_its_own(
    docs: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pod that runs `imageblur worker` has its work dir on an emptyDir of its own
    (not /tmp, not the data volume) with a sizeLimit, and a budget under that limit: the
    free space the worker sees is the node's disk, and past the limit the pod is
    evicted mid-job (docs/operations.md, "Work folders")."""
    workers = [
        d
        for d in docs
        if (spec := pod_spec(d)) is not None
        and (spec["containers"][0].get("args") or [""])[0] == "worker"
    ]
    assert workers
    for worker in workers:
        spec: Any = pod_spec(worker)
        container = spec["containers"][0]
        settings = _settings(monkeypatch, _effective_env(docs, container))
        assert settings.work_dir is not None, worker["metadata"]["name"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = str(settings.work_dir)
        assert volume in mounts and volume not in ("/tmp", str(settings.data_dir))
        [work] = [v for v in spec["volumes"] if v["name"] == mounts[volume]]
        limit = _bytes(work["emptyDir"]["sizeLimit"])
        assert settings.work_dir_max_bytes is not None
        assert settings.work_dir_max_bytes <= 0.9 * limit


# --- webhook deliveries (components/webhooks, opt-in; issue 26, item 3) ---------------------


@pytest.fixture
def webhook_docs(overlay: str, tmp_path_factory: pytest.TempPathFactory) -> list[Doc]:
    return render_with(overlay, K8S / "components" / "webhooks", tmp_path_factory.mktemp("wh"))


def test_webhook_egress_is_opt_in(docs: list[Doc]) -> None:
    assert not find(docs, "NetworkPolicy", "imageblur-webhook-egress")


def test_webhook_egress_lets_workers_out_but_never_inward(webhook_docs: list[Doc]) -> None:
    test_validates_against_kubernetes_schemas(webhook_docs, K8S_VERSIONS[0])
    policy = one(webhook_docs, "NetworkPolicy", "imageblur-webhook-egress")
    (components,) = [
        e["values"]
        for e in policy["spec"]["podSelector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/component"
    ]
    assert set(components) == {"worker", "worker-long"}  # never the API
    (rule,) = policy["spec"]["egress"]
    assert {p["port"] for p in rule["ports"]} == {80, 443}
    excepted = {
        ipaddress.ip_network(net) for block in rule["to"] for net in block["ipBlock"]["except"]
    }
    # Every range the sender refuses is refused here too.
    assert set(REFUSED) <= excepted
