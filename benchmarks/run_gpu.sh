#!/usr/bin/env bash
# The GPU checks and timings, as one run on a lent GPU machine (its image has torch, Lightning and
# torchvision; modulenet runs from the checkout). Real CIFAR-10 data and checkpoints come from
# $MODULENET_SHARED. Logs and JSON go to ${OUT:-benchmarks/gpu}.
set -u
out=${OUT:-benchmarks/gpu}; mkdir -p "$out"
export PYTHONPATH=$PWD:$PWD/benchmarks PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py >"$out/test_gpu.log" 2>&1
echo "tests/test_gpu.py exit $?"; tail -n 5 "$out/test_gpu.log"
timeout "${PAPER_SCALE_S:-270}" python3 benchmarks/bench_paper_scale.py --device cuda \
    --individuals "${PAPER_SCALE_INDIVIDUALS:-40}" --out "$out/results_paper_scale.json" --memo "$out/paper_scale_evaluations.jsonl" >"$out/paper_scale.log" 2>&1
echo "bench_paper_scale exit $?"; grep -v "individuals:" "$out/paper_scale.log" | tail -n 24
# The same generation's step without CUDA graph capture: what the graph saves, side by side.
timeout "${PAPER_SCALE_S:-270}" python3 benchmarks/bench_paper_scale.py --device cuda --eager \
    --individuals "${PAPER_SCALE_INDIVIDUALS:-40}" --out "$out/results_paper_scale_eager.json" >"$out/paper_scale_eager.log" 2>&1
echo "bench_paper_scale --eager exit $?"; grep -v "individuals:" "$out/paper_scale_eager.log" | tail -n 12
timeout "${EVALUATION_S:-180}" python3 benchmarks/bench_evaluation.py --device cuda --no-scaling \
    --out "$out/results_gpu.json" >"$out/evaluation.log" 2>&1
echo "bench_evaluation exit $?"; tail -n 9 "$out/evaluation.log"
# The evaluation stage: the per-image data path against data augmented on the GPU (issue 23).
timeout "${FINETUNE_S:-240}" python3 benchmarks/bench_finetune.py --accelerator cuda --precision bf16-mixed \
    --epochs 2 --seeds 2 --out "$out/results_finetune_gpu.json" >"$out/finetune.log" 2>&1
echo "bench_finetune exit $?"; grep -v "Warning\|warn" "$out/finetune.log" | tail -n 12
