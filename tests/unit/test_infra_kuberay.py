"""The Kubernetes manifests, checked offline: every file parses, KubeRay objects validate against
KubeRay's CRD schemas (../shared/schemas/kuberay), core kinds against Kubernetes' own (via
kubernetes-validate), and the cluster is what the project needs: token auth from a Secret,
credentials only from Secrets, shared memory sized to the object store, the project's images."""

from __future__ import annotations

import copy
import functools
import re
import shutil
import subprocess
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
def raw_crd_schema(kind: str) -> dict[str, Any]:
    """A kind's ``openAPIV3Schema`` as the CRD has it, ``x-kubernetes-*`` keys included."""
    if kind == "RayService":
        cluster = raw_crd_schema("RayCluster")
        spec = {"type": "object", "required": list(RAY_SERVICE_SPEC),
                "properties": {**RAY_SERVICE_SPEC, "rayClusterConfig": cluster["properties"]["spec"]}}
        return {**cluster, "properties": {**cluster["properties"], "spec": spec}}
    files = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayCronJob": "ray.io_raycronjobs.yaml"}
    # The CRDs are megabytes of YAML: libyaml's loader reads them several times faster.
    crd = yaml.load((kuberay_schemas() / files[kind]).read_text(), Loader=yaml.CSafeLoader)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return served["schema"]["openAPIV3Schema"]


# The shared schemas lack RayService's CRD. Its spec is KubeRay's RayServiceSpec: the Serve config
# as a string, and the cluster it runs on, whose type is RayCluster's spec; these are the fields we use.
RAY_SERVICE_SPEC = {"serveConfigV2": {"type": "string"}, "rayClusterConfig": None}


@functools.cache
def crd_validator(kind: str) -> jsonschema.Validator:
    return jsonschema.Draft7Validator(strict(raw_crd_schema(kind)))


def cel_violations(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The CEL rules (``x-kubernetes-validations``) that ``value`` breaks, evaluated where the API
    server evaluates them. Transition rules (those naming ``oldSelf``) apply to updates only."""
    import celpy

    if value is None:
        return []
    broken = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue
        environment = celpy.Environment()
        program = environment.program(environment.compile(rule["rule"]))
        if not program.evaluate({"self": celpy.json_to_cel(value)}):
            broken.append(f"{path or '.'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, item in value.items():
            child = schema.get("properties", {}).get(key) or schema.get("additionalProperties")
            if isinstance(child, dict):
                broken += cel_violations(child, item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            broken += cel_violations(schema["items"], item, f"{path}[{index}]")
    return broken


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
def test_kuberay_objects_validate_against_their_crd_and_its_cel_rules(doc):
    crd_validator(doc["kind"]).validate(doc)
    assert cel_violations(raw_crd_schema(doc["kind"]), doc) == []


def test_crd_validation_rejects_a_misspelt_field():
    cluster = copy.deepcopy(of_kind("RayCluster")[0])
    cluster["spec"]["authOption"] = cluster["spec"].pop("authOptions")
    with pytest.raises(jsonschema.ValidationError, match="authOption"):
        crd_validator("RayCluster").validate(cluster)
    job = copy.deepcopy(of_kind("RayJob")[0])
    job["spec"]["activeDeadlineSeconds"] = "2 days"
    with pytest.raises(jsonschema.ValidationError):
        crd_validator("RayJob").validate(job)


def test_cel_rules_catch_what_the_api_server_would_reject():
    job = copy.deepcopy(of_kind("RayJob")[0])
    job["spec"]["deletionStrategy"]["onSuccess"] = {"policy": "DeleteSelf"}  # legacy and rules together
    job["spec"]["deletionStrategy"]["deletionRules"][0]["condition"] = {"ttlSeconds": 60}  # no status
    broken = cel_violations(raw_crd_schema("RayJob"), job)
    assert len(broken) == 2, broken
    assert broken[0].startswith(".spec.deletionStrategy: legacy policies")
    assert broken[1].startswith(".spec.deletionStrategy.deletionRules[0].condition: the deletion condition requires")


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


def test_scheduled_rebuilds_stop_themselves_before_the_next_one_starts():
    (cron,) = of_kind("RayCronJob")
    minute, hour, *days = cron["spec"]["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and days == ["*", "*", "*"], "expected a daily schedule"
    job = cron["spec"]["jobTemplate"]
    script, config = ENTRYPOINT.fullmatch(job["entrypoint"]).groups()
    assert script == "jobs/rebuild_dataset.py"
    max_seconds = yaml.safe_load((REPO / config).read_text())["schedule"]["max_seconds"]
    # The run stops itself (its lease keeps a second one out meanwhile); the RayJob's deadline,
    # which only marks it failed, comes after that, and both before the next tick.
    assert max_seconds < job["activeDeadlineSeconds"] < 24 * 3600


# -- what Kubernetes and KubeRay check beyond the schema -------------------------------------------

def pod_specs() -> list[tuple[str, dict[str, Any], bool]]:
    """(where, pod spec, runs the Ray head) for every pod the manifests make."""
    pods = []
    for name, doc in objects():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            pods.append((name, doc["spec"]["template"]["spec"], False))
        clusters = {"RayCluster": lambda: [doc["spec"]], "RayService": lambda: [doc["spec"]["rayClusterConfig"]]}
        for cluster in clusters.get(doc["kind"], list)():
            pods.append((f"{name}:head", cluster["headGroupSpec"]["template"]["spec"], True))
            pods += [(f"{name}:{group['groupName']}", group["template"]["spec"], False)
                     for group in cluster["workerGroupSpecs"]]
    return pods


@pytest.mark.parametrize("where, pod, ray_head", [pytest.param(*p, id=p[0]) for p in pod_specs()])
def test_every_pod_follows_the_restricted_pod_security_profile(where, pod, ray_head):
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        for port in container.get("ports", []):
            assert "hostPort" not in port
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    assert all("hostPath" not in volume for volume in pod.get("volumes", []))
    # Only the Ray head's autoscaler talks to the Kubernetes API.
    assert pod.get("automountServiceAccountToken", True) is ray_head


@pytest.mark.parametrize("where, pod, ray_head", [pytest.param(*p, id=p[0]) for p in pod_specs()])
def test_every_container_requests_and_limits_cpu_memory_and_ephemeral_storage(where, pod, ray_head):
    for container in pod["containers"]:
        resources = container["resources"]
        for kind in ("cpu", "memory", "ephemeral-storage"):
            assert quantity_value(resources["requests"][kind]) <= quantity_value(resources["limits"][kind]), kind


def quantity_value(value: str) -> float:
    """A Kubernetes quantity as a number: 500m, 2, 1Gi, 200Gi, 1Ti."""
    value = str(value)
    if value.endswith("m"):
        return int(value[:-1]) / 1000
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(value[: -len(unit)]) * factor
    return float(value)


def test_the_ray_head_has_a_disruption_budget_and_the_ray_pods_the_corpus_read_only():
    (cluster,) = of_kind("RayCluster")
    (budget,) = of_kind("PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 0
    assert budget["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": cluster["metadata"]["name"],
                                                         "ray.io/node-type": "head"}
    (claim,) = of_kind("PersistentVolumeClaim")
    for group in [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        env = {variable["name"]: variable.get("value") for variable in container["env"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["CORPUS_DIR"]]
        assert mount["readOnly"] is True
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
        assert pod["imagePullSecrets"]


def test_gpu_groups_land_on_gpu_nodes_and_one_holds_eight_gpus():
    (cluster,) = of_kind("RayCluster")
    gpu_groups = [g for g in cluster["spec"]["workerGroupSpecs"]
                  if "nvidia.com/gpu" in containers(g)[0]["resources"]["limits"]]
    for group in gpu_groups:
        pod = group["template"]["spec"]
        assert pod.get("nodeSelector") or pod.get("affinity", {}).get("nodeAffinity"), group["groupName"]
    assert 8 in {int(containers(g)[0]["resources"]["limits"]["nvidia.com/gpu"]) for g in gpu_groups}


def test_network_policies_let_only_ray_and_the_ingress_reach_mlflow_and_only_mlflow_reach_postgres():
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind("NetworkPolicy")}
    mlflow, postgres = policies["mlflow"], policies["postgres"]
    assert mlflow["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mlflow"}
    (rule,) = mlflow["ingress"]
    sources = [next(iter(source)) for source in rule["from"]]
    assert sources == ["podSelector", "namespaceSelector"]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    (rule,) = postgres["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlflow"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5432}]


# KubeRay's own validation (ray-operator/controllers/ray/utils/validation.go), which its controller
# applies on top of the CRD schema: the rules that bear on these manifests.
CRON_FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
CRON_NAMES = {3: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
              4: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]}
CRON_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


def is_standard_cron(schedule: str) -> bool:
    """What robfig/cron's ParseStandard accepts: five fields (names for months and days allowed) or a
    descriptor; no seconds field, no ``TZ=`` prefix (the time zone belongs in ``timeZone``)."""
    if schedule in CRON_DESCRIPTORS:
        return True
    fields = schedule.split()
    if len(fields) != 5:
        return False
    for index, (field, (low, high)) in enumerate(zip(fields, CRON_FIELDS)):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return False
            if base in ("*", "?"):
                continue
            for bound in base.split("-", 1):
                names = CRON_NAMES.get(index, [])
                value = names.index(bound.upper()) + (index == 3) if bound.upper() in names else bound
                if not str(value).isdigit() or not low <= int(value) <= high:
                    return False
    return True


def kuberay_violations(doc: dict[str, Any]) -> list[str]:
    import zoneinfo

    broken = []
    spec = doc["spec"]
    if doc["kind"] in ("RayCluster", "RayService"):
        name = doc["metadata"]["name"]
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
            broken.append(f"name {name!r} is not a DNS-1035 label")
        cluster = spec if doc["kind"] == "RayCluster" else spec["rayClusterConfig"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            params = group.get("rayStartParams", {})
            if "labels" in params:
                broken.append("rayStartParams['labels'] is not supported: use the group's labels field")
            if {"num-cpus", "num-gpus", "memory", "resources"} & params.keys() and group.get("resources"):
                broken.append("resources set in both rayStartParams and the group's resources")
        if "gcsFaultToleranceOptions" in cluster:
            head = cluster["headGroupSpec"]
            (container,) = head["template"]["spec"]["containers"][:1]
            names = {variable["name"] for variable in container.get("env", [])}
            if "redis-password" in head.get("rayStartParams", {}) or {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS"} & names:
                broken.append("with gcsFaultToleranceOptions, Redis is configured there only")
        if cluster.get("authOptions", {}).get("mode") == "token":
            version = tuple(int(part) for part in cluster.get("rayVersion", "0").split(".")[:3])
            if version < (2, 52, 0):
                broken.append("authOptions.mode token needs rayVersion 2.52.0 or later")
    if doc["kind"] == "RayCronJob":
        if not is_standard_cron(spec["schedule"]):
            broken.append(f"invalid cron schedule {spec['schedule']!r}")
        try:
            zoneinfo.ZoneInfo(spec.get("timeZone", "UTC"))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            broken.append(f"unknown timeZone {spec.get('timeZone')!r}")
        spec = spec["jobTemplate"]
    if doc["kind"] in ("RayJob", "RayCronJob"):
        selector = spec.get("clusterSelector") or {}
        shutdown = spec.get("shutdownAfterJobFinishes", False)
        if spec.get("ttlSecondsAfterFinished", 0) > 0 and not shutdown:
            broken.append("ttlSecondsAfterFinished without shutdownAfterJobFinishes")
        if spec.get("suspend") and (selector or not shutdown):
            broken.append("suspend needs shutdownAfterJobFinishes and no clusterSelector")
        if selector and not selector.get("ray.io/cluster"):
            broken.append("clusterSelector names no cluster")
        if selector and spec.get("submissionMode") == "SidecarMode":
            broken.append("clusterSelector is not supported in SidecarMode")
        if not selector and "rayClusterSpec" not in spec:
            broken.append("one of rayClusterSpec or clusterSelector must be set")
        backoff = spec.get("backoffLimit")
        if backoff is not None and (backoff < 0 or (backoff > 0 and spec.get("submissionMode") == "InteractiveMode")):
            broken.append("backoffLimit must be >= 0, and 0 in InteractiveMode")
        if spec.get("activeDeadlineSeconds", 1) <= 0:
            broken.append("activeDeadlineSeconds must be positive")
        rules = spec.get("deletionStrategy", {}).get("deletionRules", [])
        if rules and shutdown:
            broken.append("shutdownAfterJobFinishes and deletionRules are mutually exclusive")
        for rule in rules:
            if selector and rule["policy"] in ("DeleteCluster", "DeleteWorkers"):
                broken.append(f"{rule['policy']} is not supported with clusterSelector: the cluster is shared")
    return broken


@pytest.mark.parametrize("doc", params(kuberay=True))
def test_kuberay_objects_pass_the_operators_own_validation(doc):
    assert kuberay_violations(doc) == []


def test_the_operators_validation_catches_what_it_would_reject():
    (cron,) = of_kind("RayCronJob")
    broken = copy.deepcopy(cron)
    broken["spec"].update(schedule="0 25 * * *", timeZone="Mars/Olympus_Mons")
    broken["spec"]["jobTemplate"].update(ttlSecondsAfterFinished=600, backoffLimit=-1)
    broken["spec"]["jobTemplate"]["deletionStrategy"]["deletionRules"][0]["policy"] = "DeleteCluster"
    assert len(kuberay_violations(broken)) == 5, kuberay_violations(broken)
    assert is_standard_cron("0 3 * * MON-FRI") and is_standard_cron("*/15 0-6 1,15 JAN *")
    assert not is_standard_cron("0 0 3 * * *") and not is_standard_cron("TZ=UTC 0 3 * * *")


def kustomize_build(folder: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize`` (kustomize built into kubectl; Debian's kubernetes-client package has it)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise FileNotFoundError("kubectl is not installed: `apt-get install kubernetes-client` (make test does it)")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


@pytest.mark.parametrize("folder", KUBE_FOLDERS, ids=lambda folder: folder.name)
def test_kustomize_builds_every_kustomization_into_objects_that_validate(folder):
    built = kustomize_build(folder)
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    listed = [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((folder / name).read_text())]
    generated = {g["name"] for g in kustomization.get("configMapGenerator", [])}
    assert len(built) == len(listed) + len(generated)
    names = {doc["metadata"]["name"] for doc in built if doc["kind"] == "ConfigMap"}
    for doc in built:
        if doc["apiVersion"] == "ray.io/v1":
            crd_validator(doc["kind"]).validate(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        # Generated ConfigMaps get a content hash in their name; every reference follows it.
        for node in walk(doc):
            reference = node.get("configMap", {}).get("name") if isinstance(node.get("configMap"), dict) else None
            if reference is not None:
                assert reference in names and reference not in generated, reference


def test_the_fault_tolerant_overlay_keeps_the_clusters_state_in_redis():
    built = kustomize_build(INFRA / "kuberay-ha")
    assert [doc["kind"] for doc in built] == [doc["kind"] for doc in kustomize_build(INFRA / "kuberay")]
    (cluster,) = [doc for doc in built if doc["kind"] == "RayCluster"]
    crd_validator("RayCluster").validate(cluster)
    assert cel_violations(raw_crd_schema("RayCluster"), cluster) == [] and kuberay_violations(cluster) == []
    options = cluster["spec"]["gcsFaultToleranceOptions"]
    assert options["redisAddress"] and options["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
