#!/usr/bin/env bash
# GPU check of `recops train` (bf16 throughput on a random BERT of MiniLM's shape); see gpu_check.py.
#
# For a GPU machine with Python 3.12 where recops is not installed: operator/ goes on PYTHONPATH.
# The device image has torch, transformers, accelerate, peft, pandas, pyarrow, fsspec, matplotlib,
# PyYAML and safetensors, but not pydantic or datasets. Carry them as wheels in .whl/ (downloaded
# beforehand, where pip can reach a registry; .whl/ must be ignored, e.g. via .git/info/exclude):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
#     datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
#
# then, on the device:  bash benchmarks/gpu_check.sh        (here, on the CPU:  bash benchmarks/gpu_check.sh --tiny)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/recops-site .whl/*.whl
  export PYTHONPATH=/tmp/recops-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
missing=$("$PYTHON" - <<'EOF'
import importlib.util
need = ["torch", "transformers", "accelerate", "pydantic", "datasets", "pandas", "pyarrow", "fsspec", "yaml",
        "safetensors", "matplotlib", "numpy"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing (carry them as wheels in .whl/, see the header)" >&2
  exit 2
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
