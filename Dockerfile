# syntax=docker/dockerfile:1.7
#
# streamae image. Two variants from one file:
#   docker build -t streamae:gpu .                          # CUDA (default)
#   docker build -t streamae:cpu --build-arg VARIANT=cpu .  # CPU-only torch, GBs smaller
#
# The PyPI torch wheel brings its own CUDA libraries (cuBLAS, cuDNN, NCCL, ...), so the CUDA
# variant starts from NVIDIA's small `base` image (the CUDA runtime and the NVIDIA container
# runtime's env vars) rather than `runtime`/`cudnn-runtime`, which would ship those libraries
# twice. The host needs a driver new enough for the torch wheel's CUDA (see pytorch.org).

ARG VARIANT=cuda
ARG CUDA_BASE_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04
ARG CPU_BASE_IMAGE=ubuntu:24.04

FROM ${CUDA_BASE_IMAGE} AS base-cuda
FROM ${CPU_BASE_IMAGE} AS base-cpu

# ---------------------------------------------------------------------------------------
# build: a virtual environment with streamae and its dependencies, nothing else
# ---------------------------------------------------------------------------------------
# the stage alias is picked by VARIANT; the images are pinned in the ARGs above
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG VARIANT
ARG TORCH_VERSION=2.15.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Ubuntu 24.04's python3 is 3.12; versions follow the base image's release
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/streamae
ENV PATH=/opt/streamae/bin:$PATH
# torch first, in its own layer: it is most of the image and changes least often
RUN if [ "$VARIANT" = "cpu" ]; then \
        pip install --index-url "$TORCH_CPU_INDEX" "torch==${TORCH_VERSION}"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamae ./streamae
# pip compiles the bytecode now: the root filesystem is read-only at run time, and torch
# imports far faster from .pyc files than from source
# the confluent extra: STREAMAE_KAFKA__CLIENT=confluent works in the image too (this is
# the project's own source; pyproject.toml bounds its dependencies)
# hadolint ignore=DL3013
RUN pip install ".[confluent]" \
    && pip uninstall -y pip

# ---------------------------------------------------------------------------------------
# runtime: python, tini, the virtual environment; runs as an unprivileged user
# ---------------------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
LABEL org.opencontainers.image.title="streamae" \
      org.opencontainers.image.description="Streaming anomaly detection on Kafka with autoencoders" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.streamae.variant="${VARIANT}"
# tini: PID 1 that forwards SIGTERM, so the daemon can flush and commit before it exits
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 streamae \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/streamae \
        --no-create-home --shell /usr/sbin/nologin streamae \
    && mkdir -p /var/lib/streamae/checkpoints \
    && chown -R 10001:10001 /var/lib/streamae
COPY --from=build /opt/streamae /opt/streamae
ENV PATH=/opt/streamae/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    STREAMAE_CHECKPOINTS__DIRECTORY=/var/lib/streamae/checkpoints \
    STREAMAE_METRICS_PORT=9100
WORKDIR /var/lib/streamae
VOLUME ["/var/lib/streamae/checkpoints"]
USER 10001:10001
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAMAE_METRICS_PORT', '9100'), timeout=4)"]
ENTRYPOINT ["tini", "--", "streamae"]
CMD ["run"]
