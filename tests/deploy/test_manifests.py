"""Static checks of the shipping files: Dockerfile (hadolint), docker-compose.yml
(`docker-compose config` and the shape the service relies on), Kubernetes and
KServe manifests (kubernetes-validate's bundled schemas, offline)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
# The oldest Kubernetes the manifests target (HPA autoscaling/v2, PDB policy/v1
# are GA well before it) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
UID = 10001


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[str, dict[str, Any]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in load_all(path):
            docs[doc["kind"]] = doc
    return docs


def tool(name: str) -> str:
    """A command from the project's venv (next to this interpreter), else PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"`{name}` not found: run `make setup` (and `make system-deps`)")
    return found


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_is_hadolint_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multistage_nonroot_with_healthcheck_and_exec_form() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert re.search(r"^COPY --from=build .*/opt/venv", text, re.M)
    assert re.search(r"^COPY --from=build .*/models /models", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0")), user
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD \[.*/readyz", text, re.M)
    assert re.search(r'^CMD \["python", "-m", "app"\]$', text, re.M)
    assert re.search(r'^VOLUME \["/models"\]', text, re.M)
    assert "MODELS_ROOT=/models" in text and "HOST=0.0.0.0" in text


def make_variable(name: str) -> str:
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-s",
            "--eval",
            f"print-var: ; @echo $({name})",
            "print-var",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_train_args_script_expands_like_make() -> None:
    result = subprocess.run(
        [sys.executable, "docker/train_args.py", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    expected = make_variable("TRAIN_ARGS")
    assert "--task" in expected
    assert result.stdout.strip() == expected


def test_image_trains_with_the_makefile_train_args() -> None:
    """The model baked into the image comes from the arguments `make train` uses."""
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG TRAIN_ARGS=$", text, re.M), "empty by default: the Makefile's"
    assert 'args="${TRAIN_ARGS:-$(python docker/train_args.py Makefile)}"' in text
    assert "python -m model.train $args --models-root /models" in text
    assert re.search(r"^COPY --from=build /opt/diffround /opt/diffround$", text, re.M)


def test_requirements_lock_pins_every_dependency_within_pyproject() -> None:
    lock = {}
    for line in (ROOT / "docker" / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            lock[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        s for extra in ("train", "serve") for s in project["optional-dependencies"][extra]
    ]
    for spec in specs:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} missing from docker/requirements.lock"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"{req.name}=={lock[name]} violates {spec}: rerun docker/lock.py"
        )
    assert "setuptools" in lock  # the build backend for the project's own wheel


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: exclude everything first"
    for needed in (
        "pyproject.toml",
        "Makefile",
        "docker/train_args.py",
        "README.md",
        "diffround/",
        "model/",
        "app/",
        "docker/requirements.lock",
        "docker/wheels/",
    ):
        assert f"!{needed}" in patterns


# -------------------------------------------------------------- docker-compose


def compose_config(*files: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose config` of the files (none: Compose's default pair,
    docker-compose.yml + docker-compose.override.yml)."""
    args = [tool("docker-compose")]
    for f in files:
        args += ["-f", f]
    result = subprocess.run(
        [*args, "config"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_up_publishes_port_8000_on_loopback() -> None:
    assert "ports" not in compose_config("docker-compose.yml")["services"]["diffround"]
    config = compose_config()  # what `docker compose up` reads
    assert config["services"]["diffround"]["ports"] == ["127.0.0.1:8000:8000/tcp"]
    bound = compose_config(env={"DIFFROUND_BIND": "0.0.0.0", "DIFFROUND_PORT": "9000"})
    assert bound["services"]["diffround"]["ports"] == ["0.0.0.0:9000:8000/tcp"]


def test_compose_file_validates_and_wires_service_and_trainer() -> None:
    config = compose_config("docker-compose.yml")
    service, train = config["services"]["diffround"], config["services"]["train"]

    assert service["restart"] == "unless-stopped"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    env = service["environment"]
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000" and env["MODELS_ROOT"] == "/models"
    assert service["volumes"] == ["models:/models:ro"], "the service only reads models"
    assert service["read_only"] is True

    assert train["profiles"] == ["train"]
    assert train["image"] == service["image"]
    assert train["volumes"] == ["models:/models:rw"], "the trainer writes the shared volume"
    command = " ".join(train["command"])
    assert "python -m model.train" in command
    assert "/opt/diffround/train-args" in command, "the image's (the Makefile's) TRAIN_ARGS"
    assert "models" in config["volumes"]


def test_compose_test_override_only_changes_networking_and_image() -> None:
    env = {"DIFFROUND_IMAGE": "diffround:test", "DIFFROUND_PORT": "18123"}
    base = compose_config("docker-compose.yml", env=env)
    merged = compose_config("docker-compose.yml", "docker/compose.test.yml", env=env)
    service = merged["services"]["diffround"]
    assert service["network_mode"] == "host"
    assert service["environment"]["HOST"] == "127.0.0.1"
    assert service["environment"]["PORT"] == "18123"
    assert merged["services"]["diffround"]["image"] == "diffround:test"
    # Everything the test proves about the real file stays as the real file has it.
    for key in ("volumes", "read_only", "restart"):
        assert service[key] == base["services"]["diffround"][key]
    assert merged["services"]["train"]["volumes"] == base["services"]["train"]["volumes"]
    assert merged["services"]["train"]["command"] == base["services"]["train"]["command"]


# ---------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "path", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_kubernetes_manifest_validates_strictly(path: str, version: str) -> None:
    for doc in load_all(K8S / path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_deployment_has_probes_resources_and_runs_non_root() -> None:
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"][0]["containerPort"] == 8000
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"


def test_service_hpa_and_pdb_select_the_deployment() -> None:
    docs = manifests()
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}

    def selects(selector: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    assert selects(docs["Service"]["spec"]["selector"])
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] in ports
    assert selects(docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    target = docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["minReplicas"] >= 2, "the PDB's minAvailable: 1 needs two replicas to drain"
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["minReplicas"]


# -------------------------------------------------------------------- KServe

# v1beta1 PredictorSpec: ComponentExtensionSpec + PodSpec fields + framework specs.
PREDICTOR_EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
}


def test_kserve_inferenceservice_is_a_v2_custom_predictor_on_port_8000() -> None:
    (isvc,) = load_all(KSERVE)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    env = {e["name"]: e.get("value") for e in container["env"]}
    # KServe reads a custom predictor's protocol from PROTOCOL (v1 | v2).
    assert env["PROTOCOL"] == "v2"
    assert env["PORT"] == "8000"
    assert [p["containerPort"] for p in container["ports"]] == [8000]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["securityContext"]["runAsNonRoot"] is True
    assert predictor["minReplicas"] >= 1 and predictor["maxReplicas"] > predictor["minReplicas"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kserve_predictor_pod_spec_validates_strictly(version: str) -> None:
    """No KServe CRD schema ships offline; the predictor is a PodSpec plus KServe's
    extension fields, so validate that PodSpec as a core/v1 Pod."""
    (isvc,) = load_all(KSERVE)
    predictor = dict(isvc["spec"]["predictor"])
    for field in PREDICTOR_EXTENSION_FIELDS:
        predictor.pop(field, None)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": isvc["metadata"]["name"]},
        "spec": predictor,
    }
    kubernetes_validate.validate(pod, version, strict=True)
