#!/usr/bin/env bash
# The whole pipeline on the embedded corpus: install, prepare, pretrain the tiny preset, sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/tiny}
.venv/bin/scratchlm prepare --preset tiny
# A fresh run directory each time, so the command always does the whole job.
rm -rf "$RUN"
.venv/bin/scratchlm pretrain --preset tiny --out "$RUN"
echo
echo "--- greedy continuation of a held-out math question ---"
.venv/bin/scratchlm generate "$RUN" --echo --temperature 0 --max-new-tokens 120 \
  --prompt "Question: $(.venv/bin/python -c 'from scratchlm.data import corpus; print(next(corpus.math_problems("heldout", 1))["question"])')
Answer:"
echo "plots: $RUN/plots/loss.png $RUN/plots/lr.png; metrics: $RUN/metrics.jsonl"
