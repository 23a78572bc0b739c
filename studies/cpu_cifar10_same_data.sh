#!/usr/bin/env bash
# The same-data study (README, "A fair, real-data study"; experiment=cpu_cifar10_same_data).
#
#   bash studies/cpu_cifar10_same_data.sh        # about 100 minutes on 2 CPU cores; rerun to resume
#
# 1. For each connection (channel_pool, aligned, least_squares): the search, then the final
#    population and every original fine-tuned with the same budget, two seeds (finetune.json).
# 2. Fig. 8: search score vs fine-tuned test error over 20 distinct architectures the search
#    evaluated (spread over its score ranking) for the connection whose selected architecture has
#    the lowest validation error, 8 for each other.
# 3. modulenet-report with calibration into docs/cpu_cifar10_same_data/, plus each connection's
#    finetune.json.
# Resumable per architecture: each search resumes from its checkpoint and memo, each fine-tune
# skips the architectures it finished. Outputs outside the repository in $OUT. SEARCH_ARGS and
# FINETUNE_ARGS add overrides (a smoke run: SEARCH_ARGS="knowledge_base.train_epochs=1 ...").
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(cd .. && pwd)/studies/cpu_cifar10_same_data}
DOCS=${DOCS:-docs/cpu_cifar10_same_data}
BIN=${BIN:-.venv/bin}
CONNECTIONS=(channel_pool aligned least_squares)
read -r -a search_args <<< "${SEARCH_ARGS:-}"
read -r -a finetune_args <<< "${FINETUNE_ARGS:-}"
mkdir -p "$OUT" "$DOCS"

for connection in "${CONNECTIONS[@]}"; do
  run="$OUT/search-$connection"
  resume=()
  [ -f "$run/search_state.json" ] && resume=("resume=$run")
  "$BIN/modulenet-search" experiment=cpu_cifar10_same_data "connection=$connection" progress=false \
    "hydra.run.dir=$run" "${resume[@]}" "${search_args[@]}"
done

# The connection for Fig. 8's 20 architectures: the lowest mean validation error of the selected
# architecture (validation only; the test split chooses nothing).
best=$("$BIN/python" - "$OUT" "${CONNECTIONS[@]}" <<'PY'
import json, statistics, sys
out, connections = sys.argv[1], sys.argv[2:]
def selected_val(c):
    rows = json.load(open(f"{out}/search-{c}/finetune/finetune.json"))["results"]
    return statistics.fmean(r["val_error"] for r in rows if r["selected"])
print(min(connections, key=selected_val))
PY
)
echo "Fig. 8 connection (lowest validation error of the selected architecture): $best"
runs=()
for connection in "${CONNECTIONS[@]}"; do
  count=8
  [ "$connection" = "$best" ] && count=20
  # The experiment's fine-tuning budget (conf/experiment/cpu_cifar10_same_data.yaml): modulenet-finetune
  # has its own defaults (the paper's 50 epochs), so the same budget is given here.
  "$BIN/modulenet-finetune" "search_run=$OUT/search-$connection" finetune.candidates=evaluated \
    "finetune.max_candidates=$count" finetune.include_originals=false "finetune.seeds=[0]" logger=none \
    finetune.epochs=6 finetune.lr=0.02 finetune.cutout=16 finetune.batch_size=128 finetune.augment=true \
    progress=false "hydra.run.dir=$OUT/fig8-$connection" "${finetune_args[@]}"
  cp "$OUT/search-$connection/finetune/finetune.json" "$DOCS/finetune_$connection.json"
  cp "$OUT/fig8-$connection/finetune.json" "$DOCS/fig8_finetune_$connection.json"
  runs+=("$OUT/search-$connection" "$OUT/fig8-$connection")
done
list=$(IFS=,; echo "${runs[*]}")
"$BIN/modulenet-report" "runs=[$list]" "output=$DOCS" calibrate=true logger=none \
  title="Same-data study: cpu_cifar10_same_data"
"$BIN/python" studies/summarize_same_data.py "$OUT" "$DOCS"
echo "report: $DOCS/report.md, summary: $DOCS/summary.md"
