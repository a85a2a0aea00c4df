# syntax=docker/dockerfile:1
# The recops operator: Kopf controllers only, no torch.
# Built here by `hack/images operator` on a local Debian base; elsewhere `docker build -f images/operator.Dockerfile .`
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS deps
# uv installs the pinned, hashed lock (hack/images lock); hack/images mounts the host's uv cache at
# /root/.cache/uv so a rebuild downloads nothing. Native TLS: the system CA store (a proxy's CA there works).
ENV UV_LINK_MODE=copy UV_NATIVE_TLS=1 UV_PYTHON_DOWNLOADS=never PIP_CERT=/etc/ssl/certs/ca-certificates.crt
WORKDIR /src
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check uv==0.13.9 \
 && python3 -m venv --without-pip /opt/recops
COPY images/operator.lock images/
RUN /opt/uv/bin/uv pip install --python /opt/recops/bin/python --require-hashes --no-deps --compile-bytecode -r images/operator.lock

# recops itself, apart: a code change rebuilds from here and leaves the dependency layer as it is.
FROM deps AS build
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/uv/bin/uv pip install --python /opt/recops/bin/python --no-deps --no-build-isolation --no-cache --compile-bytecode . \
 && site=$(/opt/recops/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && mkdir -p "/opt/app$site" /opt/app/opt/recops/bin \
 && cp -a "$site"/recops "$site"/recops-*.dist-info "/opt/app$site/" \
 && cp -a /opt/recops/bin/recops /opt/app/opt/recops/bin/

# On the dependency stage, not a fresh base: copying its /opt/recops would store (and, while building,
# need disk for) the whole environment twice, 6.5 GB for the torch images.
FROM deps
COPY --from=build /opt/app /
ENV PATH=/opt/recops/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="recops-operator" \
      org.opencontainers.image.description="Kubernetes operator for fine-tuning, serving and monitoring ranking models" \
      org.opencontainers.image.source="https://github.com/recops/recops" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["recops", "operator"]
