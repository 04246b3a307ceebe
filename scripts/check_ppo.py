"""Did PPO raise the reward model's score of the policy's replies, and how far did it go from the reference? On the
embedded corpus's held-out preference prompts (never trained on: their problems, stories and conversations hash to
the held-out split), replies are sampled with fixed seeds, as the rollouts sample them (rl.temperature,
rl.max_new_tokens), from the PPO run and from its parent, then scored in one process:

    reward   the run's reward model (ppo.reward_model): its score at each reply's last token
    kl       sum over the reply's tokens of log pi(y_t | s_t) - log pi_ref(y_t | s_t), the parent as pi_ref:
             the sampled estimate of KL(pi(. | x) || pi_ref(. | x)) in nats per reply (0 for the parent itself)

    .venv/bin/python scripts/check_ppo.py RUN [--prompts 500]

Prints one JSON line per policy (the parent, then the run) with the mean reward and KL and their standard errors,
then one with the gain in reward (a paired difference over the same prompts) and its standard error.
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from scratchlm.chat import generation_stop_ids, load_chat_format
from scratchlm.data import corpus
from scratchlm.data.preference_data import to_pair
from scratchlm.infer.engine import Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.posttrain.common import token_logps
from scratchlm.posttrain.ppo import response_scores
from scratchlm.posttrain.rollout import Prompt, Sample, collate_samples, sample_seed
from scratchlm.run import load_run, read_config
from scratchlm.train.stage import IGNORE, split_rows


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def measure(run_dir: str, prompts: list[Prompt], reference, reward_model, fmt, seed: int) -> dict[str, torch.Tensor]:
    """Each prompt's sampled reply scored by the reward model, and its log-ratio to the reference summed."""
    cfg, _, policy = load_run(run_dir)
    r = cfg.rl
    engine = Engine(policy, generation_stop_ids(fmt.tokenizer, fmt), max_running=len(prompts))
    params = [SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                             seed=sample_seed(seed, 0, p.index, 0)) for p in prompts]
    done = engine.generate([p.ids for p in prompts], params)
    samples = [Sample(p, out.token_ids, out.logprobs, out.forced, truncated=out.finish_reason == "length")
               for p, out in zip(prompts, done, strict=True)]
    batch = collate_samples(samples, fmt.tokenizer.pad_id)
    scores, kls = [], []
    for part in split_rows(batch, 16):
        inputs, targets = part["inputs"], part["targets"]
        mask = targets != IGNORE
        scores.append(response_scores(reward_model, inputs, targets))
        kls.append(((token_logps(policy, inputs, targets) - token_logps(reference, inputs, targets)) * mask).sum(1))
    return {"reward": torch.cat(scores), "kl": torch.cat(kls),
            "length": torch.tensor([float(len(s.tokens)) for s in samples]),
            "ended": torch.tensor([float(not s.truncated) for s in samples])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cfg = read_config(args.run_dir)
    if cfg.stage != "rl" or not cfg.ppo.reward_model:
        raise SystemExit(f"{args.run_dir} is not a PPO run (stage {cfg.stage}); give the --out of scratchlm rl "
                         "--algo ppo")
    fmt = load_chat_format(args.run_dir)
    _, _, reference = load_run(cfg.parent)
    _, _, reward_model = load_run(cfg.ppo.reward_model)
    pairs = [to_pair(record) for record in corpus.preference_pairs("heldout", args.prompts, seed=args.seed)]
    room = cfg.train.seq_len - cfg.rl.max_new_tokens
    prompts, seen = [], set()
    for index, pair in enumerate(pairs):
        ids = fmt.prompt_ids(pair.prompt)
        if len(ids) <= room and tuple(ids) not in seen:
            seen.add(tuple(ids))
            prompts.append(Prompt(index, ids, {}))
    results = {}
    for name, run in (("parent", cfg.parent), ("ppo", args.run_dir)):
        results[name] = measure(run, prompts, reference, reward_model, fmt, args.seed)
        line = {"policy": name, "run": run, "prompts": len(prompts)}
        for key, values in results[name].items():
            mean, stderr = mean_and_stderr(values)
            line[key] = round(mean, 4)
            line[f"{key}_stderr"] = round(stderr, 4)
        print(json.dumps(line))
    gain, stderr = mean_and_stderr(results["ppo"]["reward"] - results["parent"]["reward"])
    print(json.dumps({"reward_gain": round(gain, 4), "stderr": round(stderr, 4),
                      "in_stderrs": round(gain / stderr, 2) if stderr else None}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
