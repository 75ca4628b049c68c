"""The images, checked without Docker: pinned official bases that match the project's pins, an
install step that is the project's own, and a non-root user."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
MLFLOW_DOCKERFILE = REPO / "infra" / "mlflow" / "Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()]


def arg_defaults(steps: list[tuple[str, str]]) -> dict[str, str]:
    return {k: v.strip('"') for k, _, v in (args.partition("=") for op, args in steps if op == "ARG")}


def pinned(requirement: str) -> tuple[str, str]:
    name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", requirement).groups()
    return name.lower().replace("_", "-"), version


def project_pin(package: str) -> str:
    return dict(pinned(r) for r in PYPROJECT["dependencies"])[package]


def python_tag() -> str:
    """``>=3.11,<3.12`` -> ``311``: the one Python minor version the project supports."""
    major, minor = re.search(r">=(\d+)\.(\d+)", PYPROJECT["requires-python"]).groups()
    return f"{major}{minor}"


def test_base_is_the_official_ray_image_with_cuda_at_the_project_ray_and_python():
    steps = instructions(DOCKERFILE)
    assert steps[0][0] == "ARG" and [op for op, _ in steps].count("FROM") == 1
    assert dict(steps)["FROM"] == "${RAY_IMAGE}"
    base = arg_defaults(steps)["RAY_IMAGE"]
    assert re.fullmatch(rf"rayproject/ray:{re.escape(project_pin('ray'))}-py{python_tag()}-cu\d+", base), base


def test_the_cpu_variant_is_the_same_ray_on_cpu_with_cpu_torch():
    """build.sh makes the CPU base from the GPU one (``-cuNNN`` -> ``-cpu``) and passes the CPU
    torch index; the Dockerfile documents the same two build arguments."""
    base = arg_defaults(instructions(DOCKERFILE))["RAY_IMAGE"]
    cpu_base = re.sub(r"-cu\d+$", "-cpu", base)
    build = (REPO / "infra" / "docker" / "build.sh").read_text()
    assert 'cpu_base="${gpu_base%-cu*}-cpu"' in build
    assert 'build_ray_image cpu "$cpu_base" https://download.pytorch.org/whl/cpu' in build
    assert 'build_ray_image gpu "$gpu_base" ""' in build
    assert f"--build-arg RAY_IMAGE={cpu_base}" in DOCKERFILE.read_text()
    assert "--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILE.read_text()


def test_images_are_tagged_with_the_project_version():
    build = (REPO / "infra" / "docker" / "build.sh").read_text()
    assert 'tomllib.load(open("pyproject.toml", "rb"))["project"]["version"]' in build
    assert '--tag "${prefix}webllm:${version}-${variant}"' in build
    assert '--tag "${prefix}webllm-mlflow:${version}"' in build


def test_the_install_step_is_the_project_with_its_lock():
    steps = instructions(DOCKERFILE)
    (install,) = [args for op, args in steps if op == "RUN" and "pip install" in args]
    words = shlex.split(install.replace("${TORCH_INDEX_URL:+--extra-index-url \"$TORCH_INDEX_URL\"}", ""))
    assert words[:3] == ["pip", "install", "--no-cache-dir"]
    assert words[words.index("-c") + 1] == "requirements.lock"
    target = words[-1]
    extras = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", target).group(1)
    extras = extras.split(",") if extras else []
    assert set(extras) <= set(PYPROJECT.get("optional-dependencies", {})), f"extras {extras} not in pyproject.toml"

    # The install sees what pip needs to build the project: its metadata, the lock, its packages.
    copied = {source for op, args in steps if op == "COPY" for source in args.split()[1:-1] if not source.startswith("--")}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", "requirements.lock", PYPROJECT["readme"]} | {p.rstrip("*") for p in packages}
    assert needed <= copied
    copy_before_install = [op for op, _ in steps][: [args for _, args in steps].index(install)]
    assert copy_before_install.count("COPY") >= 3


def test_the_lock_pins_every_requirement_the_image_installs_at_its_pyproject_version():
    installed = list(PYPROJECT["dependencies"])
    target = shlex.split([a for op, a in instructions(DOCKERFILE) if op == "RUN" and "pip install" in a][0])[-1]
    for extra in re.findall(r"[\w-]+", target.partition("[")[2]):
        installed += PYPROJECT["optional-dependencies"][extra]
    lock = dict(pinned(line) for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line and not line.startswith("#"))
    for requirement in installed:
        name, version = pinned(requirement)
        assert lock.get(name) == version, f"{name}=={version} in pyproject.toml, {lock.get(name)} in requirements.lock"


def test_the_install_step_resolves_to_exactly_the_lock(tmp_path):
    """The Dockerfile's own ``pip install``, as a dry run from a clean slate (the GPU variant: PyPI's
    torch): every package it would install is pinned in requirements.lock at that version, so the
    image runs the versions the tests ran with. Needs the package index, as `make setup` does."""
    (install,) = [args for op, args in instructions(DOCKERFILE) if op == "RUN" and "pip install" in args]
    words = [word for word in shlex.split(install) if "$" not in word and "}" not in word]
    assert words[:2] == ["pip", "install"]
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                             "--report", str(report), *words[2:]], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lock = dict(pinned(line) for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line and not line.startswith("#"))
    resolved = {pinned(f"{item['metadata']['name']}=={item['metadata']['version']}") for item in json.loads(report.read_text())["install"]}
    unpinned = {f"{name}=={version}" for name, version in resolved
                if name != "webllm" and lock.get(name) != version.split("+")[0]}
    assert not unpinned, f"the image would install versions the lock does not pin: {sorted(unpinned)}"


def test_the_image_runs_as_a_non_root_user():
    users = [args for op, args in instructions(DOCKERFILE) if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert all(args.startswith("--chown=ray:") for op, args in instructions(DOCKERFILE) if op == "COPY")


def test_the_build_context_keeps_what_the_dockerfile_copies():
    patterns = [line for line in (REPO / "infra" / "docker" / "Dockerfile.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            keep = pattern.startswith("!")
            if fnmatch(path, pattern.lstrip("!").rstrip("/")) or fnmatch(path, pattern.lstrip("!").rstrip("/") + "/*"):
                verdict = not keep
        return verdict

    for op, args in instructions(DOCKERFILE):
        if op == "COPY":
            for source in args.split()[1:-1]:
                assert not ignored(source), f"{source} is copied but left out of the build context"
    assert ignored("data/demo-crawl") and ignored(".venv/bin/python")


def test_the_mlflow_image_runs_the_mlflow_the_jobs_log_with():
    steps = instructions(MLFLOW_DOCKERFILE)
    base = dict(steps)["FROM"]
    assert re.fullmatch(rf"python:{python_tag()[0]}\.{python_tag()[1:]}\.\d+-slim-\w+", base), base
    (install,) = [args for op, args in steps if op == "RUN"]
    requirements = dict(pinned(word) for word in shlex.split(install.split("&&")[0])[3:])
    assert requirements["mlflow"] == project_pin("mlflow")
    assert {"flask-wtf", "psycopg2-binary", "boto3"} <= requirements.keys()
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, MLFLOW_DOCKERFILE], ids=["project", "mlflow"])
def test_no_base_image_floats(dockerfile):
    steps = instructions(dockerfile)
    base = dict(steps)["FROM"]
    base = arg_defaults(steps).get(base.strip("${}"), base)
    assert ":" in base and not base.endswith((":latest", ":nightly")), base
