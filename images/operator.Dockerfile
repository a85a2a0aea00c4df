# syntax=docker/dockerfile:1
# The recops operator: Kopf controllers only, no torch.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/recops \
 && /opt/recops/bin/pip install --no-cache-dir "setuptools>=68" wheel \
 && /opt/recops/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist . \
 && /opt/recops/bin/pip install --no-cache-dir /dist/recops-*.whl

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="recops-operator" \
      org.opencontainers.image.description="Kubernetes operator for fine-tuning, serving and monitoring ranking models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/recops /opt/recops
ENV PATH=/opt/recops/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["recops", "operator"]
