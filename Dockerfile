# syntax=docker/dockerfile:1
# cxstream worker image: `docker build -t cxstream .`, then `docker run cxstream run`.
# Configuration comes from CXSTREAM_* variables (stream/settings.py); the
# topology is baked in at /etc/cxstream/topology.yaml and may be replaced by a
# mount (compose) or a ConfigMap (Helm).

# --- build: a virtualenv with cxstream and its dependencies ------------------
# Compilers live only in this stage, for dependencies shipped as sdists
# (faust-streaming builds its optional C speed-ups when gcc is present).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/cxstream
WORKDIR /src
# README.m[d]: copied when present (pyproject names it), no error while absent.
COPY pyproject.toml README.m[d] ./
COPY stream ./stream
RUN /opt/cxstream/bin/pip install .

# --- runtime -------------------------------------------------------------------
FROM python:3.11-slim
ARG UID=10001
RUN groupadd --system --gid ${UID} cxstream \
 && useradd --system --uid ${UID} --gid cxstream --home-dir /var/lib/cxstream --no-create-home cxstream \
 && mkdir -p /var/lib/cxstream /etc/cxstream \
 && chown cxstream:cxstream /var/lib/cxstream
COPY --from=build /opt/cxstream /opt/cxstream
COPY topology.yaml /etc/cxstream/topology.yaml
ENV PATH=/opt/cxstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CXSTREAM_DATA_DIR=/var/lib/cxstream \
    CXSTREAM_TOPOLOGY=/etc/cxstream/topology.yaml \
    CXSTREAM_WEB_HOST=0.0.0.0 \
    CXSTREAM_WEB_PORT=6066
USER cxstream
WORKDIR /var/lib/cxstream
EXPOSE 6066
# Liveness only (/healthz); readiness (/readyz) is for orchestrators to route on.
# No curl in slim: Python's urllib. Honours CXSTREAM_WEB_PORT if overridden.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CXSTREAM_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["cxstream"]
CMD ["run"]
