"""The Kubernetes manifests, checked offline: every file parses, KubeRay objects validate against
KubeRay's CRD schemas (../shared/schemas/kuberay), core kinds against Kubernetes' own (via
kubernetes-validate), and the cluster is what the project needs: token auth from a Secret,
credentials only from Secrets, shared memory sized to the object store, the project's images."""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline.corpus import corpus_dir

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
KUBE_FOLDERS = (INFRA / "kuberay", INFRA / "mlflow")
NOT_KUBERNETES = {"docker-compose.yml", "kustomization.yaml"}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RAY_VERSION = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
KUBERNETES_VERSION = "1.33.0"
ENTRYPOINT = re.compile(r"python (jobs/[a-z_]+\.py) --config (jobs/configs/[\w.-]+\.yaml)")
JOBS = {"jobs/build_dataset.py", "jobs/rebuild_dataset.py", "jobs/pretrain.py", "jobs/finetune_classifier.py",
        "jobs/finetune_instruct.py"}


def kuberay_schemas() -> Path:
    """KubeRay's CRDs beside the corpus in the shared folder; a clear failure when missing."""
    folder = corpus_dir().parent / "schemas" / "kuberay"
    if not folder.is_dir():
        raise FileNotFoundError(f"missing {folder}: the KubeRay CRD schemas (see ../shared/schemas/README.md)")
    return folder


def manifest_files() -> list[Path]:
    return sorted(p for folder in KUBE_FOLDERS for p in folder.glob("*.yaml") if p.name not in NOT_KUBERNETES)


def objects() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{doc['kind']}", doc) for path in manifest_files() for doc in yaml.safe_load_all(path.read_text())]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in objects() if doc["kind"] == kind]


def strict(schema: Any) -> Any:
    """An OpenAPI v3 CRD schema as JSON Schema: ``x-kubernetes-*`` keys dropped, and unknown fields
    rejected wherever the API server would (it prunes them, and kubectl's strict field validation
    turns that into an error) - that is, except under ``x-kubernetes-preserve-unknown-fields``."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: strict(value) for key, value in schema.items() if not key.startswith("x-kubernetes-")}
    if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        converted["additionalProperties"] = False
    return converted


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    files = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}
    # The CRDs are megabytes of YAML: libyaml's loader reads them several times faster.
    crd = yaml.load((kuberay_schemas() / files[kind]).read_text(), Loader=yaml.CSafeLoader)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strict(served["schema"]["openAPIV3Schema"])


# The shared schemas lack RayService's CRD. Its spec is KubeRay's RayServiceSpec: the Serve config
# as a string, and the cluster it runs on, whose type is RayCluster's spec; these are the fields we use.
RAY_SERVICE_SPEC = {"serveConfigV2": {"type": "string"}, "rayClusterConfig": None}


@functools.cache
def crd_validator(kind: str) -> jsonschema.Validator:
    if kind == "RayService":
        cluster = crd_schema("RayCluster")
        spec = {"type": "object", "additionalProperties": False, "required": list(RAY_SERVICE_SPEC),
                "properties": {**RAY_SERVICE_SPEC, "rayClusterConfig": cluster["properties"]["spec"]}}
        return jsonschema.Draft7Validator({**cluster, "properties": {**cluster["properties"], "spec": spec}})
    return jsonschema.Draft7Validator(crd_schema(kind))


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for node in walk(doc) for c in node.get("containers", []) if isinstance(c, dict) and "image" in c]


def quantity(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", str(value)).groups()
    return int(number) * units.get(unit, 1)


def test_every_manifest_parses_into_named_kubernetes_objects():
    assert manifest_files()
    for path in [*manifest_files(), *(f / "kustomization.yaml" for f in KUBE_FOLDERS)]:
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind"} <= doc.keys(), path
            if doc["kind"] != "Kustomization":
                assert doc["metadata"].get("name") or doc["metadata"].get("generateName"), path


def params(kuberay: bool) -> list:
    return [pytest.param(doc, id=name) for name, doc in objects() if (doc["apiVersion"] == "ray.io/v1") == kuberay]


@pytest.mark.parametrize("doc", params(kuberay=True))
def test_kuberay_objects_validate_against_their_crd(doc):
    crd_validator(doc["kind"]).validate(doc)


def test_crd_validation_rejects_a_misspelt_field():
    cluster = copy.deepcopy(of_kind("RayCluster")[0])
    cluster["spec"]["authOption"] = cluster["spec"].pop("authOptions")
    with pytest.raises(jsonschema.ValidationError, match="authOption"):
        crd_validator("RayCluster").validate(cluster)
    job = copy.deepcopy(of_kind("RayJob")[0])
    job["spec"]["activeDeadlineSeconds"] = "2 days"
    with pytest.raises(jsonschema.ValidationError):
        crd_validator("RayJob").validate(job)


@pytest.mark.parametrize("doc", params(kuberay=False))
def test_core_kinds_validate_against_the_kubernetes_schemas(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomizations_name_existing_files_and_leave_out_only_what_starts_on_demand():
    for folder in KUBE_FOLDERS:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        listed = set(kustomization["resources"])
        generated = {f for g in kustomization.get("configMapGenerator", []) for f in g["files"]}
        assert all((folder / name).is_file() for name in listed | generated)
        left_out = {p.name for p in folder.glob("*.yaml")} - listed - NOT_KUBERNETES
        # Started when wanted: a RayJob per run, the RayService once a model is registered.
        assert all(yaml.safe_load((folder / name).read_text())["kind"] in {"RayJob", "RayService"}
                   for name in left_out), left_out


def test_ray_token_authentication_is_on_with_the_token_from_a_secret():
    (cluster,) = of_kind("RayCluster")
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    assert cluster["spec"]["authOptions"]["secretName"]
    assert cluster["spec"]["rayVersion"] == RAY_VERSION  # authOptions needs Ray >= 2.52


def test_credentials_come_only_from_secrets():
    assert not of_kind("Secret"), "Secrets are created by the operator (infra/README.md), never committed"
    secret_looking = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
    for name, doc in objects():
        for container in containers(doc):
            for variable in container.get("env", []):
                if secret_looking.search(variable["name"]):
                    assert "secretKeyRef" in variable.get("valueFrom", {}), f"{name}: {variable['name']} is not from a Secret"
            for source in container.get("envFrom", []):
                assert source.keys() == {"secretRef"}, name
    for path in manifest_files():
        assert not re.search(r"(?i)(password|secret|token)\s*[:=]\s*['\"]?\w{6,}", path.read_text().replace("secretKeyRef", "")), path


def test_head_cpu_and_gpu_groups_with_autoscaling_bounds():
    (cluster,) = of_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu_groups = [g for g in groups.values() if "nvidia.com/gpu" in containers(g)[0]["resources"]["limits"]]
    cpu_groups = [g for g in groups.values() if g not in gpu_groups]
    assert gpu_groups and cpu_groups
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"] and group["maxReplicas"] > 0


def test_each_pod_has_shared_memory_for_its_object_store():
    (cluster,) = of_kind("RayCluster")
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    for group in groups:
        pod = group["template"]["spec"]
        (ray_container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in ray_container["volumeMounts"]}
        (shm,) = [v for v in pod["volumes"] if v["name"] == mounts["/dev/shm"]]
        assert shm["emptyDir"]["medium"] == "Memory"
        object_store = int(group["rayStartParams"]["object-store-memory"])
        assert object_store <= quantity(shm["emptyDir"]["sizeLimit"]) < quantity(ray_container["resources"]["limits"]["memory"])


def test_every_ray_pod_runs_the_project_image_at_the_project_version_as_non_root():
    (cluster,) = of_kind("RayCluster")
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        gpu = "nvidia.com/gpu" in container["resources"]["limits"]
        assert container["image"] == f"webllm:{VERSION}-{'gpu' if gpu else 'cpu'}"
        assert container["workingDir"] == "/home/ray/webllm"  # where the image puts jobs/ (Dockerfile)
        assert pod["securityContext"]["runAsNonRoot"] is True
    (mlflow,) = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "mlflow"]
    assert containers(mlflow)[0]["image"] == f"webllm-mlflow:{VERSION}"


def test_job_specs_run_the_project_jobs_on_the_cluster():
    (cluster,) = of_kind("RayCluster")
    specs = [job["spec"] for job in of_kind("RayJob")] + [cron["spec"]["jobTemplate"] for cron in of_kind("RayCronJob")]
    scripts = set()
    for spec in specs:
        match = ENTRYPOINT.fullmatch(spec["entrypoint"])
        assert match, spec["entrypoint"]
        scripts.add(match.group(1))
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert spec["submissionMode"] == "HTTPMode"
    assert scripts == JOBS


def test_scheduled_rebuilds_cannot_overlap():
    (cron,) = of_kind("RayCronJob")
    minute, hour, *days = cron["spec"]["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and days == ["*", "*", "*"], "expected a daily schedule"
    assert cron["spec"]["jobTemplate"]["activeDeadlineSeconds"] < 24 * 3600
    assert ENTRYPOINT.fullmatch(cron["spec"]["jobTemplate"]["entrypoint"]).group(1) == "jobs/rebuild_dataset.py"
