"""`scratchlm rl SFT_RUN --out RUN --algo grpo --reward gsm8k`: reinforcement learning on the policy's own
samples, on the one launch and loop.

    problems -> chat prompts (scratchlm.posttrain.rollout)
    -> the stage of rl.algo: a batch source that samples the policy through the engine with its current weights
       (launch hands the model to the stage factory, Shares.model) and a loss over the samples' tokens
       grpo  group-relative advantages, the clipped ratio, a KL penalty to the reference (scratchlm.posttrain.grpo)
       ppo   a value model and GAE against a reward model (scratchlm.posttrain.ppo; the CLI dispatches)
    -> the reference: the parent's weights, frozen, built and sharded like the policy (common.frozen_reference)

A step's global batch is rl.prompts_per_step x rl.group_size samples, so train.global_batch_tokens follows
from them (x train.seq_len, the most a row may hold); the micro-batch (train.micro_batch_size rows) adapts
to it as in the other stages.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from scratchlm.chat import load_chat_format
from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.parallel.world import World, env_world_size, resolve_dims
from scratchlm.posttrain.common import carry_run_files, check_layout, frozen_reference, require_policy
from scratchlm.posttrain.grpo import GroupRollouts, GRPOStage
from scratchlm.posttrain.rollout import Rollouts, load_prompts, reward_function
from scratchlm.run import open_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.launch import Shares, launch
from scratchlm.train.stage import Stage

# What RL changes from its parent's config (common.stage_config): math problems instead of conversations, a
# short run at a constant rate without weight decay (a zero advantage must leave the weights alone), a line
# per step, and eager training (the rollouts take most of a step; a compile would not pay for itself).
RL_DEFAULTS = {
    "data": {"source": "embedded", "embedded_docs": 4000, "max_docs": 0},
    "train": {"max_steps": 12, "save_every": 8, "log_every": 1, "compile": "off"},
    "optim": {"lr": 1e-4, "warmup_steps": 0, "lr_decay_steps": 0, "min_lr_ratio": 1.0, "weight_decay": 0.0},
}


def set_rollout_batch(cfg: Config, user_keys: frozenset[str]) -> None:
    """train.global_batch_tokens from the rollout's shape; refuse shapes the layout or a resume cannot take."""
    r, t = cfg.rl, cfg.train
    tokens = r.prompts_per_step * r.group_size * t.seq_len
    if "train.global_batch_tokens" in user_keys and t.global_batch_tokens != tokens:
        raise ScratchError(f"scratchlm rl sets train.global_batch_tokens to rl.prompts_per_step x rl.group_size x "
                           f"train.seq_len ({tokens}); choose the batch with --rl.prompts_per_step instead")
    t.global_batch_tokens = tokens
    dp = resolve_dims(cfg.parallel, env_world_size()).dp
    if r.prompts_per_step % dp:
        raise ScratchError(f"rl.prompts_per_step {r.prompts_per_step} does not split into {dp} data-parallel ranks "
                           f"(a prompt's samples stay on one rank); use a multiple of {dp}")
    k = r.steps_per_rollout
    if t.save_every % k or t.max_steps % k:
        raise ScratchError(f"train.save_every {t.save_every} and train.max_steps {t.max_steps} must be multiples of "
                           f"rl.steps_per_rollout {k}: a checkpoint inside a rollout could not resume exactly")


def rl(cfg: Config, parent_run: Path, run_dir: Path, resume: bool = False,
       user_keys: frozenset[str] = frozenset()) -> dict[str, float]:
    """Improve parent_run's policy on its own rewarded samples into run_dir, in this process or as a torchrun rank."""
    parent_cfg, _, parent_ckpt = open_run(parent_run)  # refuses a missing run or one without weights, first
    require_policy(parent_run, parent_cfg, "scratchlm rl")
    if cfg.rl.algo == "ppo":
        raise ScratchError("rl() trains GRPO; --algo ppo runs through scratchlm.posttrain.ppo.ppo (scratchlm rl "
                           "dispatches on --algo)")
    check_layout(cfg, "scratchlm rl")
    reward_function(cfg.rl.reward)  # an unknown reward is refused before anything starts
    set_rollout_batch(cfg, user_keys)

    def data(world: World) -> tuple[BPETokenizer, Callable[[Shares], Stage]]:
        fmt = load_chat_format(parent_run)
        say = tqdm.write if world.is_main else (lambda _text: None)
        prompts = load_prompts(cfg, fmt, say)
        r, t = cfg.rl, cfg.train

        def stage(shares: Shares) -> Stage:
            source = GroupRollouts(prompts, Rollouts(cfg, fmt, world.device), shares, world, cfg)
            say(f"rl data: {len(prompts):,} prompts from "
                f"{'the embedded corpus' if cfg.data.source == 'embedded' else cfg.data.source}; {t.max_steps} steps "
                f"of {r.prompts_per_step} prompts x {r.group_size} samples = {source.order.epoch_of(t.max_steps):.2f} "
                f"epochs; reward {r.reward}, loss {r.loss_type}, KL coefficient {r.kl_coef}")
            return GRPOStage(source, frozen_reference(cfg, world, parent_ckpt), r)
        return fmt.tokenizer, stage

    return launch(cfg, run_dir, resume, data, user_keys, parent_checkpoint=parent_ckpt,
                  write_files=carry_run_files(parent_run))
