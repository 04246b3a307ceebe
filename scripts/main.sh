#!/usr/bin/env bash
# The whole pipeline on the embedded corpus: install, prepare, pretrain the tiny preset, fine-tune it on
# conversations, talk to it, improve its math with GRPO, evaluate the models and write the report card.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUN=${RUN:-runs/tiny}
SFT=${SFT:-$RUN-sft}
RL=${RL:-$RUN-rl}
PY=.venv/bin/python
.venv/bin/scratchlm prepare --preset tiny
# Fresh run directories each time, so the command always does the whole job. The tiny preset trains at most
# 1,400 steps (about 5.7M tokens, one epoch); a model that keeps a story's names and follows a request's takes
# about three times that (docs/rlhf.md, A model that follows requests). The job fits in 15 minutes on any
# 2-core machine because pretraining and fine-tuning each get a wall-clock budget (train.max_minutes: the run
# times its first steps, then sets its length to what fits). A 2-core EPYC with AVX2 alone (no native bf16)
# trains about 250 of the 1,400 steps in it, where all of them took 35 minutes; a faster CPU trains more, up
# to all. PRETRAIN_MINUTES=0 SFT_MINUTES=0 trains every step whatever it takes. train.compile auto compiles
# the model with its loss, since a run this long repays it.
rm -rf "$RUN" "$SFT" "$RL"
.venv/bin/scratchlm pretrain --preset tiny --out "$RUN" --train.max_minutes "${PRETRAIN_MINUTES:-5}"
echo
echo "--- greedy continuation of a held-out math question by the base model ---"
.venv/bin/scratchlm generate "$RUN" --echo --temperature 0 --max-new-tokens 120 \
  --prompt "Question: $($PY -c 'from scratchlm.data import corpus; print(next(corpus.math_problems("heldout", 1))["question"])')
Answer:"
.venv/bin/scratchlm sft "$RUN" --out "$SFT" --train.max_minutes "${SFT_MINUTES:-2}"
QUESTION=$($PY -c 'from scratchlm.data import corpus; print(next(corpus.math_problems("heldout", 1))["question"])')
REQUEST=$($PY -c 'from scratchlm.data import corpus; print(next(corpus.story_requests("heldout", 1)).request)')
for PROMPT in "$QUESTION" "$REQUEST"; do
  echo
  echo "--- you: $PROMPT"
  echo "--- $SFT (greedy):"
  .venv/bin/scratchlm chat "$SFT" --prompt "$PROMPT" --temperature 0 --max-new-tokens 400
done
# GRPO: the fine-tuned model answers train problems, 8 samples each, and learns from the right final answers.
.venv/bin/scratchlm rl "$SFT" --out "$RL" --algo grpo --reward gsm8k
# GSM8K-style held-out math, scored by lm-evaluation-harness's rules: the base model few-shot (three worked
# examples fill most of tiny's 512-token context), the fine-tuned and RL models zero-shot through the chat format,
# with as many new tokens as GRPO's rollouts (a worked answer takes 60 to 100; a model that rambles stops sooner).
.venv/bin/scratchlm eval "$RUN" --tasks gsm8k --fewshot 3 --max-new-tokens 112 --limit 200
.venv/bin/scratchlm eval "$SFT" --tasks gsm8k --limit 200 --max-new-tokens 128
.venv/bin/scratchlm eval "$RL" --tasks gsm8k --limit 200 --max-new-tokens 128
.venv/bin/scratchlm report "$RL"
echo
echo "report card: $RL/report.html; talk to the model: .venv/bin/scratchlm chat $RL"
