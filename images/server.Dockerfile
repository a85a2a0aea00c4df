# syntax=docker/dockerfile:1
# recops serve: the ranking server (torch on the CPU by default; see TORCH_INDEX_URL).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Empty: PyPI's torch (CUDA on Linux). Set to a CPU-only wheel index for a smaller image.
ARG TORCH_INDEX_URL=""
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/recops \
 && /opt/recops/bin/pip install --no-cache-dir "setuptools>=68" wheel \
 && if [ -n "${TORCH_INDEX_URL}" ]; then /opt/recops/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch; fi \
 && /opt/recops/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist . \
 && /opt/recops/bin/pip install --no-cache-dir "$(ls /dist/recops-*.whl)[serve]"

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="recops-server" \
      org.opencontainers.image.description="recops serve: real-time ranking with feedback and Prometheus metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/recops /opt/recops
ENV PATH=/opt/recops/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HOME=/tmp/hf
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["recops", "serve"]
