#!/usr/bin/env bash
# GPU check: the CUDA tests and the GPU bench in one go, every table written to one folder.
#
#   bash scripts/gpu_check.sh OUT_DIR [EPOCHS]
#
# Needs a CUDA machine with python3 + torch, torchvision, pillow, numpy, pandas and pytest. gradio and
# imagehash are NOT needed (the engine, CLI and bench never import them; tests/test_gpu_imports.py checks it).
#
# Data and weights. The bench reads hymenoptera (train/ and val/ folders, 46 MB) and the ImageNet weights of
# mobilenet_v2 (14 MB) from the folder named by $FTUI_SHARED (default: ./shared, then ../shared). A device
# machine receives only the repo's checkout, in which an (ignored) `shared/` folder travels too, 64 MiB in all.
# So, in a session that has a GPU, from the repo root on the machine that has ../shared:
#
#   mkdir -p shared/data shared/weights
#   cp -r ../shared/data/hymenoptera_data shared/data/
#   cp ../shared/weights/mobilenet_v2_imagenet_dequantized.pth shared/weights/
#   # (shared/ is in .gitignore: never commit it; the device tool sends it anyway, ~61 MB with the repo)
#
# then run this script on the GPU machine, e.g. through the device tool:
#   command: PYTHONUNBUFFERED=1 bash scripts/gpu_check.sh $OUT     timeout_s: 600
# and copy the tables it prints (and OUT_DIR/summary.md) into README's GPU section, with the card's name.
# resnet50 trains from scratch (--weights none): no resnet50 weights are carried.
#
# Files written (at most 8, what the device tool brings back): env.txt, tests.txt, bench_<backbone>.txt
# (table) and bench_<backbone>.json for mobilenet_v2 and resnet50 at batch 64, summary.md.
# Time: about 1 min of tests, 1-3 min per bench on an H100/H200 at 3 epochs (the default); each step has its
# own timeout (150 s tests, 200 s per bench) so the whole stays under 9 minutes of a 10-minute device call.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${1:?usage: scripts/gpu_check.sh OUT_DIR [EPOCHS]}"
EPOCHS="${2:-3}"
mkdir -p "$OUT"
SHARED="${FTUI_SHARED:-}"
if [ -z "$SHARED" ]; then
    if [ -d shared/data/hymenoptera_data ]; then SHARED=shared; else SHARED=../shared; fi
fi
export FTUI_SHARED="$SHARED"
DATA="$SHARED/data/hymenoptera_data"
WEIGHTS="$SHARED/weights/mobilenet_v2_imagenet_dequantized.pth"

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    python3 - <<'EOF'
import platform, torch, torchvision
from ftui import devices
print("python", platform.python_version(), "torch", torch.__version__, "torchvision", torchvision.__version__)
print("cuda available", torch.cuda.is_available(), "gpus", torch.cuda.device_count())
if torch.cuda.is_available():
    d = torch.device("cuda")
    print("card", devices.device_name(d), "bf16", devices.cuda_has_bf16(d), "amp", devices.amp_dtype(d))
print("cpu", devices.cpu_model(), "threads", torch.get_num_threads())
EOF
    echo "data $DATA: $(ls "$DATA" 2>&1 | tr '\n' ' ')"
    echo "weights $WEIGHTS: $(ls -la "$WEIGHTS" 2>&1)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

status=0
echo "== CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_gpu_imports.py \
    tests/test_batchaug.py tests/test_gpudata.py tests/test_devices.py 2>&1 | tee "$OUT/tests.txt" || status=1

bench() {  # bench BACKBONE WEIGHTS
    local name=$1 weights=$2
    echo "== bench $name (weights $weights, batch 64, $EPOCHS epochs)"
    timeout 200 python3 -m ftui bench "$DATA" --backbone "$name" --weights "$weights" --batch-size 64 \
        --epochs "$EPOCHS" --tutorial-workers 4 --device cuda --json > "$OUT/bench_$name.json" \
        2> >(tee "$OUT/bench_$name.log" >&2) || { status=1; return; }
    python3 -c "import json, sys; from ftui.bench.speed import format_table; \
print(format_table(json.load(open(sys.argv[1]))))" "$OUT/bench_$name.json" | tee "$OUT/bench_$name.txt"
}
if [ -d "$DATA/train" ] && [ -f "$WEIGHTS" ]; then
    bench mobilenet_v2 "$WEIGHTS"
    bench resnet50 none
else
    echo "bench skipped: $DATA or $WEIGHTS missing (see this script's header)" | tee "$OUT/bench_skipped.txt"
    status=1
fi
rm -f "$OUT"/bench_*.log  # progress lines only; keeps the folder within the 8 files that come back

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| backbone | card | train vs limit | train (warm epochs) vs limit | infer vs limit | all-layers epoch / tutorial "
      "| first metric s | predict ms |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for f in sorted(out.glob("bench_*.json")):
    try:
        r = json.loads(f.read_text())
    except ValueError:
        continue
    fmt = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    print(f"| {r['backbone']} | {r.get('device_name')} | {fmt(r.get('engine_vs_compute_limit'))} | "
          f"{fmt(r.get('engine_warm_vs_compute_limit'))} | "
          f"{fmt(r.get('engine_infer_vs_compute_limit'))} | {fmt(r.get('engine_vs_tutorial_epoch'))} | "
          f"{fmt(r.get('first_metric_seconds'))} | {fmt(r.get('predict_ms'), 1)} |")
print("\ntargets (issue 12): >= 0.70 (train), >= 0.70, <= 0.50, <= 2 s, <= 10 ms")
EOF
exit $status
