# syntax=docker/dockerfile:1
# The gRPC front (`python -m dedup_server`): stateless, configured by DEDUP_* variables, talks to
# Triton and Milvus by address. Base dependencies only (not the local/model/dev extras).
# Build from the repository root (BuildKit reads front.Dockerfile.dockerignore beside this file):
#   docker build -f deploy/front.Dockerfile -t dedup-front .

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
COPY server/ server/
COPY clients/python/ clients/python/
# Versions are pinned in pyproject.toml; a venv copies cleanly into the runtime stage.
RUN python -m venv /opt/dedup \
    && /opt/dedup/bin/pip install --no-cache-dir . \
    && find /opt/dedup -name __pycache__ -prune -exec rm -rf {} +

FROM python:3.11.14-slim-bookworm
RUN groupadd --system --gid 10001 dedup \
    && useradd --system --uid 10001 --gid dedup --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin dedup
COPY --from=build /opt/dedup /opt/dedup
COPY deploy/grpc_health_check.py /opt/dedup/grpc_health_check.py
ENV PATH=/opt/dedup/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEDUP_HOST=0.0.0.0 \
    DEDUP_PORT=50051 \
    DEDUP_METRICS_PORT=9464 \
    DEDUP_DATA_DIR=/tmp/dedup
USER 10001:10001
# gRPC (dedup.v1 + grpc.health.v1 + reflection), Prometheus /metrics.
EXPOSE 50051 9464
# For docker/compose; Kubernetes ignores it and uses the probes in deploy/k8s.
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
    CMD ["python", "/opt/dedup/grpc_health_check.py"]
ENTRYPOINT ["python", "-m", "dedup_server"]
