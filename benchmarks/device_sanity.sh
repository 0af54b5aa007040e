#!/usr/bin/env bash
# The sanity pass for real on a CUDA machine (the device tool's GPU), from the repo root:
#   carried wheels (.whl/: bitsandbytes, ...) -> /tmp/site on PYTHONPATH;
#   the repo made importable (editable install, else doctor/checks -> checks links);
#   benchmarks/device_sanity.py: every family from a folder without processor files, clean and with
#   a NaN weight, disagreeing pinpoints and the older planted defects, in fp16, bf16 and 4-bit; then
#   a llava-1.5-7b-shaped LLaVA (random weights) through the whole pass (stages 1-4, 32 tokens)
#   beside bare transformers doing the same work, with the ratio (target <= 1.5x);
#   then the CUDA-marked tests (tests/sanity/test_sanity_cuda.py).
# Logs land in $OUT. About 6-8 minutes on an H100 (the 7B build writes ~14 GB); REPEAT=2 for steadier ratios.
# Dry run on the CPU here (tiny dimensions, same code): TINY=1 INSTALL=0 bash benchmarks/device_sanity.sh
# Cost only, faster:  FAMILIES=0 MODES=fp16 bash benchmarks/device_sanity.sh
set -u
OUT=${OUT:-/tmp/device_sanity_out}
DEVICE=${DEVICE:-cuda}
MODES=${MODES:-fp16,bf16,4bit}
BIG=${BIG:-7b}
REPEAT=${REPEAT:-1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
if [ "${TINY:-0}" = 1 ]; then DEVICE=cpu MODES=fp32,4bit BIG=small REPEAT=1; fi

if [ "${INSTALL:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! $PY -c "import doctor.checks.sanity" 2>/dev/null; then
  if ! $PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1; then
    echo "editable install failed (see install.log); linking doctor/checks and doctor/fixers instead"
  fi
  if ! $PY -c "import doctor.checks.sanity" 2>/dev/null; then
    ln -sfn ../checks doctor/checks; ln -sfn ../fixers doctor/fixers
  fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
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
extra=""; [ "${FAMILIES:-1}" = 0 ] && extra="--no-families"
timeout "${DRIVER_TIMEOUT:-480}" $PY benchmarks/device_sanity.py --device "$DEVICE" --modes "$MODES" --big "$BIG" \
  --repeat "$REPEAT" --out "$OUT" $extra 2>&1 | tee "$OUT/device_sanity.log"
driver=$?
tests=0
if [ "$DEVICE" != cpu ]; then
  timeout "${PYTEST_TIMEOUT:-150}" $PY -m pytest -q -p no:cacheprovider -rs tests/sanity/test_sanity_cuda.py 2>&1 \
    | tee "$OUT/pytest_cuda.log"
  tests=$?
fi
echo "driver rc=$driver pytest rc=$tests"
exit $(( driver != 0 || tests != 0 ))
