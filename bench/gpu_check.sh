#!/usr/bin/env bash
# The GPU check, one command (under 8 minutes on one H100): bash bench/gpu_check.sh [--smoke] [OUT]
#   1. the notebooks' `#| cuda` cells (tests/test_cuda_cells.py: nbdev_test --flags cuda on each notebook that has one);
#   2. full-size Stable Diffusion 1.5 (random weights) fine-tuning steps in bf16 at per-device batch 8/16/32, side by side
#      with diffusers' train_text_to_image.py training step, and peak memory against full_size.predict_memory;
#   3. generation images/s of DialogToImagePipeline against diffusers' StableDiffusionPipeline at the same settings.
# Writes OUT/gpu_check.json and OUT/gpu_check.md (default OUT: gpu_check_out). --smoke runs 2 and 3 on the CPU with the tiny
# tier (the logic, not the figures) and reports the cuda cells as skipped when there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=""
if [ "${1:-}" = "--smoke" ]; then smoke="--smoke"; shift; fi
out="${1:-gpu_check_out}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$SECONDS

python - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {'available: ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available'}")
EOF

echo "== 1. #| cuda cells"
cells_status=0
# 300 s at most: the check as a whole must stay under 8 minutes
timeout 300 python -m pytest -q -rs tests/test_cuda_cells.py 2>&1 | tee "$out/cuda_cells.log" || cells_status=$?
echo "cuda cells: exit $cells_status after $((SECONDS-start)) s"

echo "== 2-3. fine-tuning step and generation against diffusers"
timeout 400 python bench/gpu_check.py $smoke --out "$out"
python - "$out" "$cells_status" <<'EOF'
import json, sys
from pathlib import Path
out, status = Path(sys.argv[1]), int(sys.argv[2])
log = (out/'cuda_cells.log').read_text()
res = json.loads((out/'gpu_check.json').read_text())
res['cuda_cells'] = dict(exit=status, skipped='skipped' in log.splitlines()[-1] if log.strip() else None, tail=log[-1500:])
(out/'gpu_check.json').write_text(json.dumps(res, indent=1))
md = out/'gpu_check.md'
md.write_text(md.read_text() + f"\n`#| cuda` cells: {'skipped (no CUDA device)' if res['cuda_cells']['skipped'] else 'exit ' + str(status)}\n")
EOF
echo "wrote $out/gpu_check.json and $out/gpu_check.md in $((SECONDS-start)) s"
exit $cells_status
