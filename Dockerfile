# One image for the MLflow server, the Ray head and the Ray GPU workers.
# PyPI's torch wheels carry their CUDA runtime: with the NVIDIA container toolkit on the host,
# a worker that reserves a GPU (docker-compose.yml) sees it without a CUDA base image.
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends curl git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/ssmix
COPY pyproject.toml README.md ./
COPY ssmix ./ssmix
COPY trainables ./trainables
COPY sweeps ./sweeps
COPY cluster/mlflow-server.sh ./cluster/mlflow-server.sh
# Ray pinned: a RayJob's rayVersion (cluster/kuberay/rayjob.yaml) must name the Ray in its image.
ARG RAY_VERSION=2.60.0
RUN pip install --no-cache-dir "torch>=2.4,<2.15" \
 && pip install --no-cache-dir ".[sweep,minilm,cluster]" "ray[default,tune]==${RAY_VERSION}"

# Checkpoints and results shared by head and workers (Ray's storage_path).
RUN mkdir -p /shared/ray_results
ENV SSMIX_STORAGE_PATH=/shared/ray_results
