# syntax=docker/dockerfile:1
#
# One image for every siyu process: the worker (default), the collector, and the one-shot
# `siyu migrate` / `siyu topics`. Build from the repository root:
#
#     docker build -t siyu:0.1.0 .
#
# Two stages. The builder makes siyu's wheel and installs it with the `rocksdb` extra into a
# virtualenv at /opt/siyu; the runtime stage is the same slim Python image plus that
# virtualenv, a non-root user and the state directory. Every dependency ships binary
# wheels for CPython 3.11 on manylinux x86_64, and `--only-binary=:all:` keeps it that way:
# a dependency that would need a compiler fails the build instead of dragging one in.
# Neither stage installs a compiler. See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (.dockerignore lets nothing else in).
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/siyu \
 && /opt/siyu/bin/pip install --only-binary=:all: "$(ls /wheels/siyu-*.whl)[rocksdb]" \
 && /opt/siyu/bin/siyu --help > /dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="siyu" \
      org.opencontainers.image.description="siyu worker and collector: Kafka in, Faust state, ClickHouse out"
# A fixed uid/gid, so Kubernetes' fsGroup and runAsUser can name it.
RUN groupadd --system --gid 10001 siyu \
 && useradd --system --uid 10001 --gid siyu --home-dir /var/lib/siyu --no-create-home \
        --shell /usr/sbin/nologin siyu \
 && install -d -o siyu -g siyu -m 0750 /var/lib/siyu
COPY --from=builder /opt/siyu /opt/siyu
# Defaults for a container; the same SIYU_* variables override them at run time.
# The web port (/healthz, /readyz, /metrics) must be reachable from outside the container's
# network namespace (probes, Prometheus), so it binds all of the container's addresses.
ENV PATH=/opt/siyu/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SIYU_DATA_DIR=/var/lib/siyu \
    SIYU_STORE=rocksdb \
    SIYU_WORKER_WEB_HOST=0.0.0.0
WORKDIR /var/lib/siyu
USER 10001:10001
# Faust tables (RocksDB) live here: a volume, so state survives a new container.
VOLUME ["/var/lib/siyu"]
EXPOSE 6066
ENTRYPOINT ["siyu"]
CMD ["worker"]
