#!/usr/bin/env bash
# Build the project's images, tagged with the project version from pyproject.toml:
#   [REGISTRY/]webllm:<version>-gpu     Ray + CUDA: the head and the GPU training workers
#   [REGISTRY/]webllm:<version>-cpu     Ray on CPU: the data-processing workers
#   [REGISTRY/]webllm-mlflow:<version>  the MLflow tracking server (infra/mlflow/Dockerfile)
#
#   REGISTRY=ghcr.io/acme infra/docker/build.sh [--push]
#
# The Ray images are built FROM the base image's digest, resolved when building, and record it
# (label org.opencontainers.image.base.digest): a rebuild of the same tag is the same base.
set -euo pipefail
cd "$(dirname "$0")/../.."

prefix="${REGISTRY:+${REGISTRY%/}/}"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
gpu_base="$(sed -n 's/^ARG RAY_IMAGE=//p' infra/docker/Dockerfile)"  # rayproject/ray:<ray>-py311-cu128
cpu_base="${gpu_base%-cu*}-cpu"

build_ray_image() {  # variant base-image torch-index-url
    local variant="$1" base="$2" torch_index="$3" pinned
    docker pull --quiet "$base" >/dev/null
    pinned="$(docker image inspect --format '{{index .RepoDigests 0}}' "$base")"
    docker build --file infra/docker/Dockerfile \
        --build-arg RAY_IMAGE="$pinned" --build-arg TORCH_INDEX_URL="$torch_index" \
        --label org.opencontainers.image.version="$version" \
        --label org.opencontainers.image.base.name="$base" \
        --label org.opencontainers.image.base.digest="${pinned#*@}" \
        --tag "${prefix}webllm:${version}-${variant}" .
}

build_ray_image gpu "$gpu_base" ""
build_ray_image cpu "$cpu_base" https://download.pytorch.org/whl/cpu
docker build --label org.opencontainers.image.version="$version" \
    --tag "${prefix}webllm-mlflow:${version}" infra/mlflow

if [[ "${1:-}" == "--push" ]]; then
    for image in "webllm:${version}-gpu" "webllm:${version}-cpu" "webllm-mlflow:${version}"; do
        docker push "${prefix}${image}"
    done
    # A tag can be pushed again; a digest names one image for good. Pin the clusters to these.
    echo "Pin the manifests to what was pushed (infra/README.md, step 1):"
    for image in "webllm:${version}-gpu" "webllm:${version}-cpu" "webllm-mlflow:${version}"; do
        echo "  ${image%%:*} ${image##*:} $(docker image inspect --format '{{index .RepoDigests 0}}' "${prefix}${image}")"
    done
fi
