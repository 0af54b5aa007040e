#!/usr/bin/env bash
# The README's first command and `check --sanity` on a CUDA machine (the device tool's H100), from
# the repo root: carried wheels in .whl/ (bitsandbytes, jsonschema, ijson), an editable install,
# `vlm-doctor demo`, then `check --sanity` on the demo's merged model in fp16, bf16 and 4-bit.
# Dry run here: OUT=/tmp/devout DEV=cpu bash benchmarks/device_check.sh
set -u; export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 OUT=${OUT:-/tmp/devout}; mkdir -p $OUT
if ls .whl/*.whl >/dev/null 2>&1; then python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site; fi
python3 -m pip install -q --no-deps --no-build-isolation -e . > $OUT/install.log 2>&1 || echo "install failed"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
rm -rf /tmp/ws; timeout 120 python3 -m doctor demo /tmp/ws > $OUT/demo.log 2>&1; echo "demo rc=$?"; grep -E "✔|✘|Demo finished|│ (pass|fail|warn)" $OUT/demo.log | head -40
M=/tmp/ws/adapters/llava-lora-merged
for q in "--dtype fp16" "--dtype bf16" "--load-4bit"; do timeout 60 python3 -m doctor check $M --sanity --device ${DEV:-cuda} $q --select SAN --output-format json -o $OUT/san.json; echo "check --sanity $q rc=$?"; python3 -c "import json;d=json.load(open('$OUT/san.json'));[print(' ',s['stage'],s['name'],s['status'],s['seconds'],s['peak_memory_bytes'],s['memory_kind'],s['detail'][:70]) for m in d.get('sanity',{}).get('models',[]) for s in m['stages']];[print('  skip',c['code'],c['reason']) for c in d['checks'] if c['status']=='skip']"; done
