"""One config system: typed dataclasses, named presets, a YAML file, dotted overrides.

Resolution order, later wins:  preset  ->  --config FILE.yaml  ->  --section.field VALUE overrides.
The resolved config is written to every run directory as config.yaml, so any run can be repeated
with `--config RUN_DIR/config.yaml`. An unknown key is an error that names the nearest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scratchlm import atomic
from scratchlm.errors import ScratchError
from scratchlm.infer.tools import parse_tools


@dataclass
class ModelConfig:
    """Shape of the Transformer. Field names follow Llama's; see docs/architecture.md."""

    vocab_size: int = 4096
    dim: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2  # grouped-query attention: each KV head serves n_heads / n_kv_heads query heads
    ffn_hidden_dim: int = 768  # SwiGLU inner width (w1, w3: dim -> hidden; w2: hidden -> dim)
    max_seq_len: int = 512  # longest context the RoPE tables cover
    rope_theta: float = 10000.0
    # "llama3": Llama 3.1's long-context RoPE, which slows the low frequencies by rope_factor and blends
    # the middle ones (as transformers' rope_type "llama3"); "none": plain RoPE.
    rope_scaling: str = "none"
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_seq_len: int = 8192
    norm_eps: float = 1e-5
    tie_embeddings: bool = True  # the output head reuses the token-embedding matrix
    init_std: float = 0.02
    # "lm": logits over the vocabulary (a language model, a policy); "score": one scalar per position from
    # a Linear(dim, 1) in place of the LM head (a reward model, as transformers' LlamaForSequenceClassification)
    head: str = "lm"

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


@dataclass
class DataConfig:
    source: str = "embedded"  # "embedded" | a local .txt/.jsonl/.parquet file, dir or glob | "hf:NAME[:CONFIG]"
    text_field: str = "text"  # the column that holds the text in .jsonl, .parquet and hub datasets
    hub_split: str = "train"
    embedded_docs: int = 40000  # documents of the embedded corpus's train split
    max_docs: int = 0  # stop after this many documents (0: all); useful for streamed hub datasets
    val_fraction: float = 0.01  # share of documents held out for validation (the embedded corpus has its own)
    vocab_size: int = 4096  # BPE vocabulary to train, special tokens included
    tokenizer: str = ""  # reuse this tokenizer.json instead of training one
    dir: str = ""  # where prepared shards go; empty: a cache folder keyed by source and tokenizer settings
    workers: int = 0  # tokenizer worker processes; 0: one per CPU core
    dtype: str = "auto"  # shard dtype: "auto" (uint16 when the vocabulary fits, else uint32) | "uint16" | "uint32"
    seed: int = 0
    strict: bool = False  # conversations: refuse the first bad record (with its number) instead of skipping it


COMPILE_MODES = ("auto", "off", "model", "blocks")


@dataclass
class TrainConfig:
    seq_len: int = 512
    micro_batch_size: int = 8  # sequences per forward/backward on one data-parallel rank
    global_batch_tokens: int = 4096  # tokens per optimizer step over all ranks; sets gradient accumulation
    # About 5.7M tokens, an epoch of the embedded corpus. The tiny model does not yet keep a hero's name through a
    # story (greedy: 0 of 60 held-out stories); 4,200 steps (three epochs) do (44 of 60), see docs/rlhf.md
    max_steps: int = 1400
    # > 0: a wall-clock budget for the training loop, first compile included. After its first steps (inside the
    # warmup, whose rates do not depend on the run's length) the run times itself and lowers max_steps to what
    # fits; config.yaml records the count, and a resume keeps it. 0: max_steps as given.
    max_minutes: float = 0.0
    precision: str = "auto"  # "auto" (bf16 where the hardware has it natively) | "bf16" (autocast) | "fp32"
    # torch.compile: "auto" (what pays off for this run, compile time counted) | "off" | "model" (one process:
    # the whole model and its loss) | "blocks" (each block, as FSDP and TP need); see scratchlm.train.compile
    compile: str = "auto"
    activation_checkpointing: bool = False
    eval_every: int = 50
    eval_batches: int = 4  # the validation set, in global batches of windows (or conversations)
    # Tasks of `scratchlm eval` scored at every validation on the weights being trained (e.g. [gsm8k, bpb]),
    # each on its first eval_limit records (0: all of them); see docs/eval.md
    eval_tasks: list[str] = field(default_factory=list)
    eval_limit: int = 100
    log_every: int = 10
    save_every: int = 250
    keep_checkpoints: int = 2
    seed: int = 1337
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    peak_flops: float = 0.0  # per device, for MFU; 0: known GPU table, or a measured bf16 matmul on CPU

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step, over all data-parallel ranks."""
        return self.global_batch_tokens // self.seq_len


@dataclass
class OptimConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine ends at this fraction of the peak
    warmup_steps: int = 40
    lr_decay_steps: int = 0  # length of the schedule; 0: train.max_steps. Fix it to run one schedule in chunks.
    weight_decay: float = 0.1  # on matrices only, never on norms and embeddings
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0

    @property
    def follows_max_steps(self) -> bool:
        """Whether the rates after the warmup depend on train.max_steps: a cosine whose length is not fixed by
        lr_decay_steps. A constant rate (min_lr_ratio 1) has no length."""
        return not self.lr_decay_steps and self.min_lr_ratio != 1.0


@dataclass
class ParallelConfig:
    """Mesh dimensions: pp x dp_replicate x dp_shard x tp = world size."""

    pp: int = 1
    dp_replicate: int = 1
    dp_shard: int = -1  # -1: whatever the world size leaves
    tp: int = 1
    pp_schedule: str = "1F1B"
    pp_microbatches: int = 0  # 0: this rank's batch in micro-batches of train.micro_batch_size
    backend: str = "auto"  # "auto" (nccl on GPU, gloo on CPU) | "nccl" | "gloo"


@dataclass
class SFTConfig:
    """Supervised fine-tuning on conversations (scratchlm sft)."""

    packing: bool = False  # several conversations per row instead of one row each padded to the longest
    # tools the model will use (e.g. calculator): replies are encoded as generation with them produces them,
    # and what a tool feeds is not trained (docs/sft.md, Tool use)
    tools: str = ""


@dataclass
class RewardConfig:
    """The reward model (scratchlm reward): Bradley-Terry loss -log sigmoid(r_chosen - r_rejected - margin)."""

    margin: float = 0.0  # for pairs whose record gives no margin of its own


@dataclass
class DPOConfig:
    """Direct preference optimisation (scratchlm dpo)."""

    beta: float = 0.1  # strength of the pull towards the reference: implicit reward = beta * log(pi / pi_ref)
    loss: str = "sigmoid"  # "sigmoid" (DPO) | "ipo" (squared distance of the log-ratio margin to 1 / (2 beta))
    reference_free: bool = False  # true: compare the policy's log-probs alone (a reference of uniform odds)


RL_ALGOS = ("grpo", "ppo")
RL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


@dataclass
class RLConfig:
    """Reinforcement learning from rewards on the policy's own samples (scratchlm rl, docs/rlhf.md)."""

    algo: str = "grpo"  # grpo | ppo
    reward: str = "gsm8k"  # the verifiable reward (scratchlm.posttrain.rewards): gsm8k, the right final answer
    format_reward: float = 0.0  # added to the reward of a completion that ends in a "#### <number>" line
    group_size: int = 8  # G: samples of each prompt; their rewards are compared with each other
    prompts_per_step: int = 8  # prompts of each optimizer step: a step trains on prompts_per_step x G samples
    steps_per_rollout: int = 1  # optimizer steps that learn from one rollout; > 1 reuses samples (the ratio clips)
    max_new_tokens: int = 128  # a completion's length at most; one cut short gets the reward of what it wrote
    temperature: float = 1.0  # of the rollouts' sampling
    clip_low: float = 0.2  # the importance ratio is clipped to [1 - clip_low, 1 + clip_high] (PPO's epsilon)
    clip_high: float = 0.2  # DAPO's clip-higher raises it (0.28) so unlikely tokens can grow
    kl_coef: float = 0.0  # beta of the k3 KL penalty to the reference (the parent's weights); 0: logged only
    loss_type: str = "grpo"  # how token losses are averaged: grpo (per sequence) | dr_grpo | dapo (per token)
    scale_rewards: bool = True  # divide each group's advantages by its reward's std (Dr. GRPO: false)
    # tools the rollouts run (calculator: the engine computes each <<expression= the policy writes); what a
    # tool feeds is part of the scored text but not the policy's action, so it is not trained
    tools: str = ""


@dataclass
class PPOConfig:
    """PPO against a reward model (scratchlm rl --algo ppo; the sampling, clipping and KL settings are rl's)."""

    reward_model: str = ""  # the reward model's run directory (--reward-model); the value model starts from it
    epochs: int = 2  # passes over each rollout; each takes rl.steps_per_rollout / epochs optimizer steps
    gamma: float = 1.0  # discount of later rewards in the advantage
    lam: float = 0.95  # GAE's lambda: 1 sums every later reward, 0 trusts the value of the next state alone
    value_clip: float = 0.2  # how far a step may move the value model's estimate before its loss stops pulling
    value_coef: float = 0.1  # weight of the value loss beside the policy's


@dataclass
class Config:
    preset: str = "tiny"
    stage: str = "pretrain"  # what trained this run: pretrain | sft | reward | dpo | rl (set by the command)
    parent: str = ""  # the run whose weights this one started from (the lineage base -> sft -> ...)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _llama(dim: int, n_layers: int, n_heads: int, n_kv_heads: int, ffn: int, vocab: int, seq: int,
           lr: float, micro_batch: int, batch_tokens: int, steps: int, theta: float = 10000.0,
           tie: bool = False) -> dict[str, Any]:
    return {
        "model": dict(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, ffn_hidden_dim=ffn,
                      vocab_size=vocab, max_seq_len=seq, rope_theta=theta, tie_embeddings=tie),
        "data": dict(vocab_size=vocab),
        "train": dict(seq_len=seq, micro_batch_size=micro_batch, global_batch_tokens=batch_tokens, max_steps=steps,
                      eval_every=500, save_every=1000),
        "optim": dict(lr=lr, warmup_steps=2000),
    }


# Llama-like shapes. tiny trains on a laptop CPU in minutes (its values are the dataclass defaults);
# 1b and 3b follow Llama 3.2, 7b and 13b Llama 2, 70b Llama 3. Training settings past tiny are
# starting points for GPU clusters: about 1M to 16M tokens per step.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},
    "125m": _llama(768, 12, 12, 4, 2048, 32768, 2048, 6e-4, 8, 524288, 20000),
    "350m": _llama(1024, 24, 16, 4, 2816, 32768, 2048, 3e-4, 8, 524288, 40000),
    "1b": _llama(2048, 16, 32, 8, 8192, 128256, 2048, 3e-4, 4, 1048576, 60000, 500000.0, tie=True),
    "3b": _llama(3072, 28, 24, 8, 8192, 128256, 4096, 3e-4, 2, 2097152, 60000, 500000.0, tie=True),
    "7b": _llama(4096, 32, 32, 32, 11008, 32000, 4096, 3e-4, 1, 4194304, 100000),
    "13b": _llama(5120, 40, 40, 40, 13824, 32000, 4096, 3e-4, 1, 4194304, 100000),
    "70b": _llama(8192, 80, 64, 8, 28672, 128256, 8192, 1.5e-4, 1, 16777216, 100000, 500000.0),
}


# Old values that still read: train.compile was a bool (true: each block compiled) before it named a mode,
# and config.yaml files of earlier runs say so.
OLD_VALUES = {"train.compile": {"true": "blocks", "false": "off"}}


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cfg: Config | None = None) -> list[str]:
    """Every dotted key a user may set, e.g. 'optim.lr'."""
    cfg = cfg or Config()
    keys = []
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(value)]
        else:
            keys.append(section.name)  # a top-level value: preset, stage, parent
    return keys


def _unknown_key(key: str, known: list[str]) -> ScratchError:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if not near:  # also try the last part alone: 'lrr' -> 'optim.lr'
        tails = {k.split(".")[-1]: k for k in known}
        near = [tails[t] for t in difflib.get_close_matches(key.split(".")[-1], list(tails), n=1, cutoff=0.6)]
    hint = f"; did you mean '{near[0]}'?" if near else ""
    return ScratchError(f"unknown config key '{key}'{hint}")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Turn a YAML or command-line value into the field's type, or explain why it cannot be."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        typ = next(t for t in typing.get_args(typ) if t is not type(None))
    if typing.get_origin(typ) is list:  # of names: a YAML list, or "a,b" on the command line ("" or []: none)
        items = value.split(",") if isinstance(value, str) else [] if value is None else value
        if isinstance(items, list | tuple) and all(isinstance(item, str) for item in items):
            return [item.strip() for item in items if item.strip()]
        raise ScratchError(f"config key '{key}' wants a list of names (in YAML a list, on the command line "
                           f"comma-separated), got {value!r}")
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if typ in (int, float) and isinstance(value, bool):
            raise ValueError  # YAML's `lr: true` is a bool, which Python would take as the number 1
        if typ is int:
            as_float = float(value)  # accepts 1e6 and 8_192 alike
            if not as_float.is_integer():  # nan and inf included
                raise ValueError
            return int(as_float)
        if typ is float:
            number = float(value)
            if not math.isfinite(number):
                raise ScratchError(f"config key '{key}' wants a finite number, got {value!r}")
            return number
        if typ is str:
            return "" if value is None else str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ScratchError(f"config key '{key}' wants {getattr(typ, '__name__', typ)}, got {value!r}")


def set_key(cfg: Config, key: str, value: Any) -> None:
    """Set one dotted key with type checking: set_key(cfg, 'optim.lr', '3e-4')."""
    known = all_keys(cfg)
    if key not in known:
        raise _unknown_key(key, known)
    if "." not in key:
        setattr(cfg, key, "" if value is None else str(value))
        return
    section_name, name = key.split(".", 1)
    section = getattr(cfg, section_name)
    value = _coerce(key, value, _field_types(type(section))[name])
    setattr(section, name, OLD_VALUES.get(key, {}).get(str(value).lower(), value))


def apply_dict(cfg: Config, tree: dict[str, Any], where: str = "") -> None:
    """Merge a nested mapping (a YAML file, a preset) into cfg, key by key."""
    if not isinstance(tree, dict):
        raise ScratchError(f"{where or 'config'} must be a mapping of sections, got {type(tree).__name__}")
    for top, value in tree.items():
        if top == "preset":
            continue  # recorded by load_config; a preset inside a file does not re-apply its values
        if isinstance(value, dict):
            for name, inner in value.items():
                set_key(cfg, f"{top}.{name}", inner)
        else:
            set_key(cfg, str(top), value)


def preset(name: str) -> Config:
    if name not in PRESETS:
        near = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f"; did you mean '{near[0]}'?" if near else f"; choose one of {', '.join(PRESETS)}"
        raise ScratchError(f"unknown preset '{name}'{hint}")
    cfg = Config(preset=name)
    apply_dict(cfg, PRESETS[name])
    return cfg


def read_tree(config_file: str | Path) -> dict[str, Any]:
    """A config file's mapping of sections, or one line saying why the file is not one."""
    path = Path(config_file)
    if path.is_dir():
        raise ScratchError(f"config file {path} is a folder; give a YAML file such as RUN_DIR/config.yaml")
    if not path.is_file():
        raise ScratchError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScratchError(f"config file {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); "
                           "a config is a YAML file, saved as UTF-8") from None
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ScratchError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(tree, dict):
        raise ScratchError(f"config file {path} must hold a mapping of sections")
    return tree


def load_config(preset_name: str | None = None, config_file: str | Path | None = None,
                overrides: dict[str, Any] | None = None, skip_sections: tuple[str, ...] = ()) -> Config:
    """Resolve a config: preset (default tiny, or the one named in the file), then the file, then overrides."""
    tree = read_tree(config_file) if config_file else {}
    cfg = preset(preset_name or tree.get("preset") or "tiny")
    apply_dict(cfg, {k: v for k, v in tree.items() if k not in skip_sections}, str(config_file))
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    validate(cfg)
    return cfg


BUDGET_STEPS = 10  # steps a run with train.max_minutes times before it fixes its length


def budget_step(cfg: Config) -> int:
    """The step after which train.max_minutes sets train.max_steps: one whose learning rate, and every earlier
    one's, does not depend on the run's length. That holds inside the warmup, and everywhere when the
    schedule's length is fixed (optim.lr_decay_steps) or the rate is constant (optim.min_lr_ratio 1)."""
    o = cfg.optim
    return min(BUDGET_STEPS, o.warmup_steps) if o.follows_max_steps else BUDGET_STEPS


def validate(cfg: Config) -> None:
    """Reject configs that cannot train, before anything is allocated."""
    m, t, o = cfg.model, cfg.train, cfg.optim
    sizes = {"model.dim": m.dim, "model.n_heads": m.n_heads, "model.n_layers": m.n_layers,
             "model.vocab_size": m.vocab_size, "model.ffn_hidden_dim": m.ffn_hidden_dim}
    for key, value in sizes.items():  # before any of them divides another below
        if value < 1:
            raise ScratchError(f"{key} must be at least 1, got {value}")
    checks = [
        (m.dim % m.n_heads == 0, f"model.dim {m.dim} is not divisible by model.n_heads {m.n_heads}"),
        (m.n_kv_heads >= 1 and m.n_heads % m.n_kv_heads == 0,
         f"model.n_kv_heads {m.n_kv_heads} must divide model.n_heads {m.n_heads} (grouped-query attention)"),
        (m.head_dim % 2 == 0, f"head dim {m.head_dim} (dim / n_heads) must be even for rotary embeddings"),
        (m.rope_scaling in ("none", "llama3") and m.rope_high_freq_factor > m.rope_low_freq_factor,
         f"model.rope_scaling must be none or llama3 (got '{m.rope_scaling}'), with rope_high_freq_factor above "
         "rope_low_freq_factor"),
        (m.head in ("lm", "score"), f"model.head must be lm or score, got '{m.head}'"),
        (cfg.dpo.beta > 0, f"dpo.beta must be positive, got {cfg.dpo.beta}; try 0.1"),
        (cfg.dpo.loss in ("sigmoid", "ipo"), f"dpo.loss must be sigmoid or ipo, got '{cfg.dpo.loss}'"),
        *_rl_checks(cfg.rl),
        (cfg.ppo.epochs >= 1, f"ppo.epochs must be at least 1, got {cfg.ppo.epochs}"),
        (0 <= cfg.ppo.gamma <= 1 and 0 <= cfg.ppo.lam <= 1,
         f"ppo.gamma and ppo.lam must be in [0, 1], got {cfg.ppo.gamma} and {cfg.ppo.lam}"),
        (cfg.ppo.value_clip > 0 and cfg.ppo.value_coef > 0, "ppo.value_clip and ppo.value_coef must be positive"),
        (o.lr > 0, f"optim.lr must be positive, got {o.lr}; try 3e-4"),
        (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1, f"optim.beta1 and optim.beta2 must be in [0, 1), got {o.beta1} and "
                                                f"{o.beta2}; AdamW's usual values are 0.9 and 0.95"),
        (o.eps > 0, f"optim.eps must be positive, got {o.eps}"),
        (m.norm_eps > 0, f"model.norm_eps must be positive, got {m.norm_eps}; Llama uses 1e-5"),
        (m.init_std > 0 and m.rope_theta > 0, "model.init_std and model.rope_theta must be positive"),
        (0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio must be in [0, 1], got {o.min_lr_ratio}"),
        (o.warmup_steps >= 0 and o.grad_clip >= 0 and o.weight_decay >= 0,
         "optim.warmup_steps, optim.grad_clip and optim.weight_decay must not be negative"),
        (t.max_steps >= 1, f"train.max_steps must be at least 1, got {t.max_steps}"),
        (t.max_minutes >= 0, f"train.max_minutes must be 0 (no budget) or positive, got {t.max_minutes}"),
        (t.max_minutes == 0 or budget_step(cfg) >= 2,
         f"train.max_minutes times the run during its warmup, whose rates do not depend on the run's length, and "
         f"optim.warmup_steps {o.warmup_steps} leaves no step to time after the first (which compiles); use "
         "--optim.warmup_steps 2 or more, or fix the schedule's length with --optim.lr_decay_steps"),
        (t.seq_len >= 2, f"train.seq_len must be at least 2, got {t.seq_len}"),
        (t.seq_len <= m.max_seq_len,
         f"train.seq_len {t.seq_len} exceeds model.max_seq_len {m.max_seq_len}; raise model.max_seq_len"),
        (t.micro_batch_size >= 1, f"train.micro_batch_size must be at least 1, got {t.micro_batch_size}"),
        (t.precision in ("auto", "bf16", "fp32"), f"train.precision must be auto, bf16 or fp32, got '{t.precision}'"),
        (t.device in ("auto", "cpu", "cuda"), f"train.device must be auto, cpu or cuda, got '{t.device}'"),
        (t.compile in COMPILE_MODES, f"train.compile must be auto, off, model or blocks, got '{t.compile}'"),
        (t.eval_every >= 1 and t.log_every >= 1 and t.save_every >= 1 and t.keep_checkpoints >= 1
         and t.eval_batches >= 1,
         "train.eval_every, eval_batches, log_every, save_every and keep_checkpoints must be at least 1"),
        (t.eval_limit >= 0, f"train.eval_limit must be 0 (every record) or positive, got {t.eval_limit}"),
        (m.head == "lm" or not t.eval_tasks,
         f"train.eval_tasks needs a language model, and this one has a {m.head} head (a reward model); "
         "leave train.eval_tasks empty"),
        (cfg.parallel.pp_microbatches >= 0,
         f"parallel.pp_microbatches must be 0 (automatic) or positive, got {cfg.parallel.pp_microbatches}"),
        (cfg.data.vocab_size >= 300, f"data.vocab_size {cfg.data.vocab_size} is too small: byte-level BPE "
                                     "needs 256 byte tokens plus merges and special tokens; use at least 300"),
    ]
    for ok, message in checks:
        if not ok:
            raise ScratchError(message)
    for key, tools in (("sft.tools", cfg.sft.tools), ("rl.tools", cfg.rl.tools)):
        try:
            parse_tools(tools)
        except ScratchError as exc:
            raise ScratchError(f"{key}: {exc}") from None
    if cfg.rl.tools and cfg.rl.algo == "ppo":
        raise ScratchError("rl.tools runs with --algo grpo only: PPO's advantages run over a response without the "
                           "holes a tool's fed tokens leave; drop --tools")
    if t.eval_tasks:
        from scratchlm.eval.evaluate import check_tasks  # the task registry imports the evaluation modules

        check_tasks(t.eval_tasks, "train.eval_tasks")
    # Whole sequences per step; how they split into ranks and micro-batches is the launch's business.
    if t.global_batch_tokens < t.seq_len or t.global_batch_tokens % t.seq_len:
        nearest = max(1, round(t.global_batch_tokens / t.seq_len)) * t.seq_len
        raise ScratchError(f"train.global_batch_tokens {t.global_batch_tokens} is not a positive multiple of "
                           f"train.seq_len {t.seq_len}; use {nearest}")


def _rl_checks(r: RLConfig) -> list[tuple[bool, str]]:
    return [
        (r.algo in RL_ALGOS, f"--algo must be one of {', '.join(RL_ALGOS)}, got '{r.algo}'"),
        (r.group_size >= 2 or r.algo != "grpo",
         f"rl.group_size must be at least 2 for GRPO (each sample is compared with the others of its prompt), got "
         f"{r.group_size}; try 8"),
        (min(r.prompts_per_step, r.steps_per_rollout, r.max_new_tokens) >= 1,
         "rl.prompts_per_step, rl.steps_per_rollout and rl.max_new_tokens must be at least 1"),
        (r.temperature > 0, f"rl.temperature must be positive (the samples of a prompt must differ), got "
                            f"{r.temperature}; try 1.0"),
        (0 <= r.clip_low < 1 and r.clip_high >= 0,
         f"rl.clip_low must be in [0, 1) and rl.clip_high at least 0, got {r.clip_low} and {r.clip_high}"),
        (r.kl_coef >= 0 and r.format_reward >= 0, "rl.kl_coef and rl.format_reward must not be negative"),
        (r.loss_type in RL_LOSS_TYPES, f"rl.loss_type must be one of {', '.join(RL_LOSS_TYPES)}, got '{r.loss_type}'"),
    ]


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['--optim.lr', '3e-4', '--train.compile=off'] -> {'optim.lr': '3e-4', 'train.compile': 'off'}."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ScratchError(f"unexpected argument '{arg}'; overrides look like --section.field VALUE")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and not _is_number(args[i + 1])):
                raise ScratchError(f"override --{key} needs a value, e.g. --{key} VALUE")
            value = args[i + 1]
            i += 2
        out[key.replace("-", "_")] = value
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
