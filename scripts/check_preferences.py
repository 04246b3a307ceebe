"""How often does a run rank the better reply of a held-out preference pair first? The embedded corpus's held-out
pairs (never trained on: their problems, stories and conversations hash to the held-out split), scored in one
process by what the run is:

    reward   the reward model's score r(prompt, reply): r(chosen) > r(rejected)
    dpo      the implicit reward beta * (log pi(reply | prompt) - log pi_ref(reply | prompt)), the run's parent
             as the reference: what DPO trains and what its val_accuracy logs
    others   (sft, base) the reply's log-prob alone: a language model's own ranking, before any preference tuning

    .venv/bin/python scripts/check_preferences.py RUN [--pairs 500]

Prints one JSON line: the accuracy with its standard error, the accuracy by kind of pair, and how many pairs
were left out as longer than the context.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict

import torch

from scratchlm.chat import load_chat_format
from scratchlm.data import corpus
from scratchlm.data.preference_data import PairSkips, to_pair
from scratchlm.posttrain.dpo import pair_logps
from scratchlm.posttrain.pairs import score_pairs, to_pair_rows
from scratchlm.posttrain.reward import pair_scores
from scratchlm.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg, _, model = load_run(args.run_dir)
    fmt = load_chat_format(args.run_dir)
    pairs = [to_pair(record) for record in corpus.preference_pairs("heldout", args.pairs, seed=args.seed)]
    skips = PairSkips()
    skips.records = len(pairs)
    rows = to_pair_rows(pairs, fmt, cfg.train.seq_len, skips, "held-out pairs")
    if not rows:
        raise SystemExit(f"no held-out pair fits the run's context of {cfg.train.seq_len} tokens ({skips.summary()})")
    pad = fmt.tokenizer.pad_id
    if cfg.model.head == "score":
        rewards = score_pairs(lambda batch: pair_scores(model, batch), rows, pad)
    elif cfg.stage == "dpo":
        _, _, reference = load_run(cfg.parent)
        beta = cfg.dpo.beta
        rewards = score_pairs(lambda batch: beta * (pair_logps(model, batch) - pair_logps(reference, batch)), rows,
                              pad)
    else:
        rewards = score_pairs(lambda batch: pair_logps(model, batch), rows, pad)
    right = (rewards[:, 0] > rewards[:, 1]).float()
    by_kind = defaultdict(list)
    for row, ok in zip(rows, right.tolist(), strict=True):
        by_kind[row.kind].append(ok)
    accuracy = right.mean().item()
    stderr = math.sqrt(accuracy * (1 - accuracy) / len(rows))
    print(json.dumps({"run": args.run_dir, "stage": cfg.stage, "pairs": len(rows),
                      "accuracy": round(accuracy, 4), "stderr": round(stderr, 4),
                      "by_kind": {k: round(sum(v) / len(v), 3) for k, v in sorted(by_kind.items())},
                      "left_out": skips.summary()}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
