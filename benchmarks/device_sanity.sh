#!/usr/bin/env bash
# The sanity pass for real on a CUDA machine (the device tool's H100), from the repo root:
#   carried wheels (.whl/: bitsandbytes, jsonschema & deps, ijson) -> /tmp/site on PYTHONPATH;
#   the repo made importable (editable install, else doctor/checks -> checks links);
#   benchmarks/device_sanity.py on CUDA in fp16, bf16 and 4-bit; the CUDA-marked tests.
# Logs land in $OUT. Dry run here: DEVICE=cpu MODES=fp32,4bit BIG=small bash benchmarks/device_sanity.sh
set -u
OUT=${OUT:-/tmp/device_sanity_out}
DEVICE=${DEVICE:-cuda}
MODES=${MODES:-fp16,bf16,4bit}
BIG=${BIG:-full}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

if [ "${INSTALL:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import doctor.checks.sanity" 2>/dev/null; then
  if ! $PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1; then
    echo "editable install failed (see install.log); linking doctor/checks and doctor/fixers instead"
    ln -sfn ../checks doctor/checks; ln -sfn ../fixers doctor/fixers
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
$PY - <<'PYEOF' 2>&1 | tee "$OUT/environment.txt"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0), f"{torch.cuda.mem_get_info()[1] / 2**30:.1f} GiB")
for name in ("transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "doctor.checks.sanity"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "ok"))
    except Exception as e:
        print(name, "MISSING", type(e).__name__, e)
PYEOF

set -o pipefail
timeout "${DRIVER_TIMEOUT:-300}" $PY benchmarks/device_sanity.py --device "$DEVICE" --modes "$MODES" --big "$BIG" \
  --out "$OUT" 2>&1 | tee "$OUT/device_sanity.log"
driver=$?
timeout "${PYTEST_TIMEOUT:-100}" $PY -m pytest -q -p no:cacheprovider -rs tests/test_sanity_cuda.py 2>&1 \
  | tee "$OUT/pytest_cuda.log"
tests=$?
echo "driver rc=$driver pytest rc=$tests"
exit $(( driver != 0 || tests != 0 ))
