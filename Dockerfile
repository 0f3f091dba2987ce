# prober container image.
#
# Two stages: the builder turns the project and its dependencies into wheels;
# the final stage installs only those wheels, so no compiler, build backend
# cache or source tree reaches the image.  Every dependency ships manylinux
# wheels, so neither stage needs a toolchain.
#
# The image runs as UID/GID 65532 (no entry in /etc/passwd needed) and works
# with a read-only root filesystem: Python writes no bytecode, and the only
# writable place it needs is /tmp (mount an emptyDir or tmpfs there).
#
# Base images are pinned to a Python minor and Debian release, never `latest`;
# pin the digest too (python:3.11-slim-bookworm@sha256:...) in a registry that
# mirrors it, and let a bot bump it.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY prober ./prober

# The project's own wheel first (no deps), then the wheels of everything it
# depends on, resolved from that wheel's metadata.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels /wheels/prober-*.whl


FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="prober" \
      org.opencontainers.image.description="Outside-in synthetic endpoint prober: DNS, TLS and HTTP" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp

# Offline install from the builder's wheels only; the bind mount keeps the
# wheels themselves out of every layer.  pip compiles .pyc files here, at
# build time, so a read-only root filesystem costs nothing at start-up.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/prober-*.whl

USER 65532:65532
WORKDIR /tmp
EXPOSE 9716

# Docker and Podman use this; Kubernetes ignores it and uses the chart's probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9716/-/healthy', timeout=4)"]

ENTRYPOINT ["prober"]
CMD ["serve", "--config", "/etc/prober/probes.yaml", "--listen", "0.0.0.0:9716"]
