"""`scratchlm <stage>`: one subcommand per stage. Each resolves its config and calls the stage; the
work lives in the modules. A ScratchError becomes one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scratchlm.errors import ScratchError

if TYPE_CHECKING:  # stages import their modules lazily, so `scratchlm --help` starts fast
    from scratchlm.config import Config

# Shortcuts for the most used config fields; every other field is --section.field VALUE.
ALIASES = {"data": "data.source", "max_steps": "train.max_steps", "algo": "rl.algo", "reward": "rl.reward",
           "reward_model": "ppo.reward_model", "rl_tools": "rl.tools"}


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named model + training preset: tiny, 125m, 350m, 1b, 3b, 7b, 13b, 70b")
    p.add_argument("--config", help="a YAML file of config sections (e.g. a run's config.yaml)")
    p.add_argument("--data", help="data source: embedded | PATH | DIR | GLOB | hf:NAME[:CONFIG] | a folder that "
                                  "scratchlm prepare wrote")
    p.add_argument("--max-steps", type=int, help="optimizer steps to train (train.max_steps)")


def _overrides(args: argparse.Namespace, extra: list[str]) -> dict[str, str]:
    """The config keys given on the command line: the shortcut flags, then every --section.field VALUE."""
    from scratchlm.config import parse_overrides

    overrides = {}
    for flag, key in ALIASES.items():
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    overrides.update(parse_overrides(extra))
    return overrides


def _resolve(args: argparse.Namespace, extra: list[str]) -> Config:
    """Preset, then --config (or, when resuming, the run's own config.yaml), then overrides."""
    from scratchlm.config import load_config

    overrides = _overrides(args, extra)
    if getattr(args, "resume", False) and not args.config and (Path(args.out) / "config.yaml").is_file():
        # The parallel layout belongs to the launch, not to the run: a run saved on 4 ranks resumes on any.
        return load_config(args.preset, Path(args.out) / "config.yaml", overrides, skip_sections=("parallel",))
    return load_config(args.preset, args.config, overrides)


def cmd_prepare(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.data.prepare import prepare

    cfg = _resolve(args, extra)
    prepared = prepare(cfg.data, args.out, force=args.force)
    m = prepared.manifest
    splits = ", ".join(f"{name} {info['tokens']:,} tokens" for name, info in m["splits"].items())
    print(f"prepared {prepared.dir}: {splits}; vocab {m['vocab_size']} ({m['dtype']} shards); "
          f"{m['bytes_per_token']:.2f} bytes per token on validation text")


def cmd_pretrain(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.infer.generate import print_samples
    from scratchlm.train.pretrain import pretrain

    cfg = _resolve(args, extra)
    out = Path(args.out)
    result = pretrain(cfg, out, resume=args.resume, user_keys=frozenset(_overrides(args, extra)))
    if not result["main"]:  # the other ranks of a torchrun job stay quiet
        return
    print(f"done: step {result['step']}, validation loss {result['val_loss']:.3f}; run directory {out}")
    if args.samples:
        print_samples(out, n=args.samples)


def _posttrain_config(args: argparse.Namespace, extra: list[str], stage: str, defaults: dict
                      ) -> tuple[Config, dict[str, str]]:
    """A post-training stage's config: the run's own config.yaml when resuming it, else the parent's config
    with the stage's defaults, --config and the overrides (scratchlm.posttrain.common.stage_config)."""
    from scratchlm.config import load_config
    from scratchlm.posttrain.common import stage_config

    out = Path(args.out)
    overrides = _overrides(args, extra)
    if args.resume and not args.config and (out / "config.yaml").is_file():
        cfg = load_config(config_file=out / "config.yaml", overrides=overrides, skip_sections=("parallel",))
    else:
        cfg = stage_config(stage, Path(args.parent_run), defaults, args.config, overrides)
    return cfg, overrides


def cmd_sft(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.posttrain.sft import SFT_DEFAULTS, sft

    cfg, overrides = _posttrain_config(args, extra, "sft", SFT_DEFAULTS)
    out = Path(args.out)
    result = sft(cfg, Path(args.parent_run), out, resume=args.resume, user_keys=frozenset(overrides))
    if result["main"]:
        print(f"done: step {result['step']}, validation loss {result['val_loss']:.3f}; run directory {out}; "
              f"talk to it with scratchlm chat {out}")


def _pairwise_result(result: dict, out: Path) -> str:
    """The last validation accuracy of a pair stage, read back from its metrics."""
    from scratchlm.train.metrics import read_metrics

    last = next((r for r in reversed(read_metrics(out)) if "val_accuracy" in r), {})
    return (f"done: step {result['step']}, validation loss {result['val_loss']:.3f}, validation pairwise accuracy "
            f"{last.get('val_accuracy', float('nan')):.3f}; run directory {out}")


def cmd_reward(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.posttrain.reward import REWARD_DEFAULTS, reward

    cfg, overrides = _posttrain_config(args, extra, "reward", REWARD_DEFAULTS)
    out = Path(args.out)
    result = reward(cfg, Path(args.parent_run), out, resume=args.resume, user_keys=frozenset(overrides))
    if result["main"]:
        print(_pairwise_result(result, out))


def cmd_dpo(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.posttrain.dpo import DPO_DEFAULTS, dpo

    cfg, overrides = _posttrain_config(args, extra, "dpo", DPO_DEFAULTS)
    out = Path(args.out)
    result = dpo(cfg, Path(args.parent_run), out, resume=args.resume, user_keys=frozenset(overrides))
    if result["main"]:
        print(f"{_pairwise_result(result, out)}; talk to it with scratchlm chat {out}")


def cmd_rl(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.posttrain.ppo import PPO_DEFAULTS, ppo
    from scratchlm.posttrain.rl import RL_DEFAULTS, rl
    from scratchlm.train.metrics import read_metrics

    cfg, overrides = _posttrain_config(args, extra, "rl", PPO_DEFAULTS if args.algo == "ppo" else RL_DEFAULTS)
    out = Path(args.out)
    train = ppo if cfg.rl.algo == "ppo" else rl
    result = train(cfg, Path(args.parent_run), out, resume=args.resume, user_keys=frozenset(overrides))
    if result["main"] and cfg.rl.algo == "ppo":
        rewards = [r["reward"] for r in read_metrics(out) if "reward" in r]
        kl = next(r["kl"] for r in reversed(read_metrics(out)) if "kl" in r)
        print(f"done: step {result['step']}, mean reward-model score of the rollout {rewards[0]:.3f} at the first "
              f"step, {rewards[-1]:.3f} at the last (KL to the reference {kl:.3f} nats per reply); run directory "
              f"{out}; measure it on held-out prompts with scripts/check_ppo.py {out}")
    elif result["main"]:
        passes = [r["pass@1"] for r in read_metrics(out) if "pass@1" in r]
        tail = passes[-10:]
        print(f"done: step {result['step']}, pass@1 of the batch {passes[0]:.3f} at the first step, "
              f"{sum(tail) / len(tail):.3f} over the last {len(tail)}; run directory {out}; measure it with "
              f"scratchlm eval {out} --tasks gsm8k")


def _sampling(args: argparse.Namespace):
    from scratchlm.infer.engine import SamplingParams
    from scratchlm.infer.tools import parse_tools

    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, seed=args.seed, tools=parse_tools(args.tools))


def cmd_chat(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.infer.terminal_chat import ChatSession, run_terminal

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm chat --help")
    params = _sampling(args)
    params.check()
    session = ChatSession(args.run_dir, args.device, warn=lambda text: print(text, file=sys.stderr))
    if args.system:
        session.conversation.system = args.system
    if args.prompt is None:
        run_terminal(session, params)
        return
    for piece in session.reply(args.prompt, params):  # the reply alone on stdout, for scripts
        print(piece, end="", flush=True)
    print()


def cmd_generate(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.infer.generate import generate_text

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm generate --help")
    params = _sampling(args)
    if args.echo:
        print(args.prompt, end="", flush=True)
    for piece in generate_text(args.run_dir, args.prompt, params, device=args.device):
        print(piece, end="", flush=True)
    print()


def cmd_serve(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.infer.server import serve

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm serve --help")
    api_key = args.api_key or os.environ.get("SCRATCHLM_API_KEY") or None
    serve(args.run_dir, host=args.host, port=args.port, api_key=api_key, max_waiting=args.max_waiting,
          max_running=args.max_running, device=args.device, model_name=args.model_name)


def cmd_corpus(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm import atomic
    from scratchlm.data import corpus

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm corpus --help")
    atomic.check_output_file(args.out, "--out")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    try:
        lines = corpus.write_jsonl(args.out, args.split, args.n, seed=args.seed, kind=args.kind)
    except ValueError as exc:
        raise ScratchError(str(exc)) from None
    print(json.dumps({"file": args.out, "lines": lines, "split": args.split, "kind": args.kind}))


def cmd_export_hf(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.interop.hf import export_hf

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm export-hf --help")
    done = export_hf(args.run_dir, args.out_dir, max_shard_size=args.max_shard_size, dtype=args.dtype)
    print(f"exported {args.run_dir} ({done['step']}, {done['dtype']}, {done['files']} safetensors file(s)) to "
          f"{done['out']}; load it with transformers.{done['auto_class']}.from_pretrained('{done['out']}')")


def cmd_import_hf(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.interop.hf import import_hf

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm import-hf --help")
    done = import_hf(args.source, args.out_run_dir)
    m = done["model"]
    print(f"imported {args.source} into {done['out']}: {m.n_layers} layers, dim {m.dim}, {m.n_heads} heads / "
          f"{m.n_kv_heads} kv heads, vocab {m.vocab_size} ({done['tokenizer_vocab']} tokens), {done['dtype']}; "
          f"try scratchlm generate {done['out']} --prompt 'Hello'")


def cmd_plan(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.parallel.planner import plan

    if not math.isfinite(args.gpu_mem_gb) or args.gpu_mem_gb <= 0:
        raise ScratchError(f"--gpu-mem-gb must be a GPU's memory in GB, such as 80; got {args.gpu_mem_gb}")
    cfg = _resolve(args, extra)
    t = cfg.train
    checkpointing = args.activation_checkpointing
    if checkpointing is None:
        checkpointing = t.activation_checkpointing
    result = plan(cfg.model, args.gpus, args.gpus_per_node, int(args.gpu_mem_gb * 1e9), args.seq_len or t.seq_len,
                  args.micro_batch or t.micro_batch_size, args.precision or t.precision, checkpointing,
                  cfg.parallel.pp_schedule, t.global_batch_tokens, cfg.parallel.pp_microbatches)
    if args.json:
        print(json.dumps(result))
        return
    gib = 2**30
    print(f"{'dp':>5} {'tp':>3} {'pp':>3} {'params':>8} {'grads':>8} {'optim':>8} {'activ':>8} {'buffers':>8} "
          f"{'total':>8}  GiB per GPU")
    for x in result["layouts"]:
        b = x["bytes"]
        keys = ("params", "grads", "optimizer", "activations", "buffers", "total")
        row = " ".join(f"{b[k] / gib:8.2f}" for k in keys)
        print(f"{x['dp']:>5} {x['tp']:>3} {x['pp']:>3} {row}  {'fits' if x['fits'] else 'too big'}")
    best = result["recommended"]
    print(f"recommended: dp {best['dp']} x tp {best['tp']} x pp {best['pp']}: {best['reason']}")
    print(f"  torchrun ... scratchlm pretrain --parallel.tp {best['tp']} --parallel.pp {best['pp']} "
          "--parallel.dp_shard -1")


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.eval.evaluate import evaluate, parse_tasks, scores_line
    from scratchlm.eval.task import EvalOptions
    from scratchlm.infer.tools import parse_tools

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm eval --help")
    options = EvalOptions(data=args.data, limit=args.limit, fewshot=args.fewshot, fewshot_data=args.fewshot_data,
                          fewshot_sampler=args.fewshot_sampler, fewshot_seed=args.fewshot_seed,
                          max_new_tokens=args.max_new_tokens, chat=args.chat, samples=args.samples,
                          temperature=args.temperature, seed=args.seed, tools=parse_tools(args.tools))

    def show(result, path) -> None:
        for warning in result.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"{scores_line(result)}; {path}")

    evaluate(args.run_dir, parse_tasks(args.tasks), options, device=args.device, batch_size=args.batch_size,
             on_result=show)


def cmd_report(args: argparse.Namespace, extra: list[str]) -> None:
    from scratchlm.eval.report import report

    if extra:
        raise ScratchError(f"unexpected arguments {' '.join(extra)}; see scratchlm report --help")
    md, page = report(args.run_dir)
    print(f"report card: {md} and {page}")


def _sampling_args(p: argparse.ArgumentParser, max_new_tokens: int, temperature: float) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    p.add_argument("--temperature", type=float, default=temperature, help="0: greedy")
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0, help="1: off")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="auto")
    _tools_arg(p)


def _tools_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tools", default="", help="tools the engine runs as the text grows: calculator (computes each "
                   "<<expression= the model writes and feeds result>>)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scratchlm", allow_abbrev=False,
                                     description="Build a Llama-style language model from scratch.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", allow_abbrev=False, help="train a tokenizer and tokenize a data source into shards")
    _config_args(p)
    p.add_argument("--out", help="output folder (default: a cache folder keyed by the data settings)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder holds a prepared dataset")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", allow_abbrev=False, help="pretrain a model from scratch into a run directory",
                       epilog="Any config field is an option: --optim.lr 3e-4 --train.precision fp32 ...")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.add_argument("--samples", type=int, default=3, help="samples to print when training ends (0: none)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("plan", allow_abbrev=False, help="memory per GPU of every parallel layout, and the one to use",
                       epilog="Any config field is an option too, e.g. --model.n_layers 40")
    _config_args(p)
    p.add_argument("--gpus", type=int, required=True, help="GPUs in all")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--gpu-mem-gb", type=float, default=80.0, help="memory of one GPU in GB (1e9 bytes)")
    p.add_argument("--seq-len", type=int, default=0, help="default: the config's train.seq_len")
    p.add_argument("--micro-batch", type=int, default=0, help="sequences per micro-batch (default: the config's)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None)
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("sft", allow_abbrev=False, help="fine-tune a run on conversations (supervised fine-tuning)",
                       epilog="Any config field is an option: --optim.lr 3e-4 --sft.packing true ...")
    p.add_argument("parent_run", metavar="base_run",
                   help="the pretrained (or imported) run whose weights to start from")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory of the fine-tuned model")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("reward", allow_abbrev=False, help="train a reward model on preference pairs (Bradley-Terry)",
                       epilog="Any config field is an option: --reward.margin 0.5 --optim.lr 1e-4 ...")
    p.add_argument("parent_run", metavar="sft_run", help="the fine-tuned run whose trunk the reward model starts from")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory of the reward model")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.set_defaults(func=cmd_reward)

    p = sub.add_parser("dpo", allow_abbrev=False, help="tune a policy on preference pairs (direct preference "
                       "optimisation)", epilog="Any config field is an option: --dpo.beta 0.1 --dpo.loss ipo ...")
    p.add_argument("parent_run", metavar="sft_run", help="the fine-tuned run to start from and to stay close to")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory of the tuned policy")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.set_defaults(func=cmd_dpo)

    p = sub.add_parser("rl", allow_abbrev=False, help="improve a policy on its own rewarded samples (GRPO)",
                       epilog="Any config field is an option: --rl.group_size 8 --rl.kl_coef 0.04 --optim.lr 1e-4 ...")
    p.add_argument("parent_run", metavar="sft_run", help="the fine-tuned run to start from (and the KL reference)")
    _config_args(p)
    p.add_argument("--out", required=True, help="run directory of the tuned policy")
    p.add_argument("--algo", help="grpo (default) | ppo (rl.algo)")
    p.add_argument("--reward", help="the verifiable reward: gsm8k (default; rl.reward), the right final answer")
    p.add_argument("--reward-model", help="ppo: the reward model's run (scratchlm reward) to optimise against; the "
                   "value model starts from it (ppo.reward_model)")
    p.add_argument("--tools", dest="rl_tools", help="tools the rollouts run: calculator (rl.tools; as eval --tools)")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's latest checkpoint")
    p.set_defaults(func=cmd_rl)

    p = sub.add_parser("generate", allow_abbrev=False, help="continue a prompt with a trained model")
    p.add_argument("run_dir")
    p.add_argument("--prompt", required=True)
    _sampling_args(p, max_new_tokens=200, temperature=0.8)
    p.add_argument("--echo", action="store_true", help="print the prompt before its continuation")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", allow_abbrev=False, help="talk with a model in the terminal (multi-turn, streamed)")
    p.add_argument("run_dir")
    p.add_argument("--prompt", help="answer this one message, print the reply alone and exit")
    p.add_argument("--system", help="a system message to start with")
    _sampling_args(p, max_new_tokens=300, temperature=0.7)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("serve", allow_abbrev=False,
                       help="serve a model over OpenAI's API (chat and completions, streamed) with a web chat at /")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (the first line says which)")
    p.add_argument("--api-key", help="clients must send it as Authorization: Bearer KEY (default: "
                   "$SCRATCHLM_API_KEY; neither: no key)")
    p.add_argument("--max-running", type=int, default=64, help="sequences decoded together at most")
    p.add_argument("--max-waiting", type=int, default=256,
                   help="sequences waiting for a running slot at most; beyond it requests get 429")
    p.add_argument("--model-name", help="the model id clients name (default: the run directory's name)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export-hf", allow_abbrev=False,
                       help="write a run's latest checkpoint as a Hugging Face Llama model directory")
    p.add_argument("run_dir")
    p.add_argument("out_dir", help="new directory for transformers, vLLM, llama.cpp's converter, lm-eval")
    p.add_argument("--max-shard-size", default="5GB", help="split model.safetensors above this size (e.g. 2GB)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="weights' dtype (default: the checkpoint's)")
    p.set_defaults(func=cmd_export_hf)

    p = sub.add_parser("import-hf", allow_abbrev=False,
                       help="turn a Llama-architecture Hugging Face model into a run directory")
    p.add_argument("source", help="a local model directory, or a hub id such as owner/name")
    p.add_argument("out_run_dir")
    p.set_defaults(func=cmd_import_hf)

    p = sub.add_parser("eval", allow_abbrev=False, help="score a run on tasks, as lm-evaluation-harness scores them",
                       epilog="Tasks: gsm8k, story_questions, arc, hellaswag, mmlu, bpb. Writes RUN_DIR/eval/"
                              "<task>.json and <task>_samples.jsonl; see docs/eval.md.")
    p.add_argument("run_dir")
    p.add_argument("--tasks", required=True, help="comma-separated task names, e.g. gsm8k,story_questions,bpb")
    p.add_argument("--data", help="the task's data: a .jsonl/.parquet/.txt file or hf:NAME[:CONFIG[:SPLIT]] "
                                  "(default: embedded held-out data, or the task's hub dataset)")
    p.add_argument("--limit", type=int, help="evaluate the first N records")
    p.add_argument("--fewshot", type=int, help="gsm8k: solved examples before each question (default 5; 0 in chat)")
    p.add_argument("--fewshot-data", help="gsm8k: where the examples come from (default: embedded train problems)")
    p.add_argument("--fewshot-sampler", default="first_n", help="first_n (the first k) | random (lm-eval's draw)")
    p.add_argument("--fewshot-seed", type=int, default=1234, help="seed of --fewshot-sampler random")
    p.add_argument("--max-new-tokens", type=int, help="gsm8k: tokens to generate at most (default 256, or half "
                                                       "the context)")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="gsm8k: ask through the chat format (default: when the run's lineage holds an SFT stage)")
    p.add_argument("--samples", type=int, default=1, help="gsm8k: completions per question, for pass@k")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--seed", type=int, default=0, help="seed of sampled completions")
    _tools_arg(p)
    p.add_argument("--batch-size", type=int, default=16, help="rows per forward when scoring log-likelihoods")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", allow_abbrev=False,
                       help="the report card of a run and its ancestors: scores, loss curves, sample answers")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("corpus", allow_abbrev=False, help="write the embedded corpus (stories, math, conversations, "
                       "preference pairs) to a .jsonl file")
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="train", help="train | validation | heldout")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--kind", default="documents", help="documents | stories | math | conversations | preferences")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_corpus)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        args.func(args, extra)
    except ScratchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted; a run continues from its last checkpoint with --resume", file=sys.stderr)
        sys.exit(130)
