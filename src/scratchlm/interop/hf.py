"""Export to and import from the Hugging Face Llama format (LlamaForCausalLM; a reward model exports as
LlamaForSequenceClassification with one label).

Our Transformer has Llama's parameter shapes and its rotate-half RoPE layout, so converting is
renaming tensors (RENAMES, one map used both ways) and translating the config: no weight is
permuted, scaled or changed. Export keeps the checkpoint's dtype unless asked for another.

`scratchlm export-hf RUN_DIR OUT_DIR` writes what transformers, vLLM, llama.cpp's converter and
lm-evaluation-harness load with no extra code:

    config.json               LlamaForCausalLM: shapes, rope_theta (+ rope_scaling), rms_norm_eps, ids, torch_dtype
                              (a reward model: LlamaForSequenceClassification, one label, its pad_token_id)
    generation_config.json    bos and pad ids; eos_token_id: every id that ends generation (chat.generation_stop_ids);
                              language models only
    model.safetensors         or model-0000k-of-0000n.safetensors + model.safetensors.index.json above --max-shard-size
    tokenizer.json            the run's BPE, with a post-processor that prepends bos as our training documents do
    tokenizer_config.json     bos/eos/pad tokens and the chat template (scratchlm.chat: ours, or an imported one)

`scratchlm import-hf SOURCE OUT_RUN_DIR` turns a Llama-architecture checkpoint (a local directory,
or a hub id fetched with huggingface_hub) into a run directory whose latest checkpoint is
step_000000. The model keeps its own conventions: special_tokens.json records which tokens are bos,
eos and pad, whether its tokenizer starts a text with bos, and every end-of-sequence id
(generation_config.json and config.json eos_token_id, which may be lists: Llama 3 instruct ends a turn
with <|eot_id|>); its chat template, if any, goes to chat_template.jinja. What the Transformer cannot
represent (biases, experts, sliding windows, other RoPE types or activations) is refused by name
before anything is written.

transformers is not imported here: it is an optional extra for users and tests, not for the core.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, processors

from scratchlm import atomic
from scratchlm.chat import CHAT_TEMPLATE_FILE, find_chat_format, generation_stop_ids
from scratchlm.config import Config, ModelConfig, validate
from scratchlm.errors import ScratchError
from scratchlm.model import Transformer, build_model
from scratchlm.run import CONFIG_FILE, SPECIAL_TOKENS_FILE, TOKENIZER_FILE, open_run
from scratchlm.tokenizer import BPETokenizer
from scratchlm.train.checkpoint import is_sharded, load_weights, model_state

# (our name, Hugging Face name); {i} is the layer index.
RENAMES = [
    ("tok_embeddings.weight", "model.embed_tokens.weight"),
    ("layers.{i}.attention_norm.weight", "model.layers.{i}.input_layernorm.weight"),
    ("layers.{i}.attention.wq.weight", "model.layers.{i}.self_attn.q_proj.weight"),
    ("layers.{i}.attention.wk.weight", "model.layers.{i}.self_attn.k_proj.weight"),
    ("layers.{i}.attention.wv.weight", "model.layers.{i}.self_attn.v_proj.weight"),
    ("layers.{i}.attention.wo.weight", "model.layers.{i}.self_attn.o_proj.weight"),
    ("layers.{i}.ffn_norm.weight", "model.layers.{i}.post_attention_layernorm.weight"),
    ("layers.{i}.feed_forward.w1.weight", "model.layers.{i}.mlp.gate_proj.weight"),
    ("layers.{i}.feed_forward.w2.weight", "model.layers.{i}.mlp.down_proj.weight"),
    ("layers.{i}.feed_forward.w3.weight", "model.layers.{i}.mlp.up_proj.weight"),
    ("norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("score.weight", "score.weight"),  # a reward model's head (LlamaForSequenceClassification)
]


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(\d+)") + "$")


_TO_HF = [(_pattern(ours), hf) for ours, hf in RENAMES]
_FROM_HF = [(_pattern(hf), ours) for ours, hf in RENAMES]


def rename(name: str, to_hf: bool) -> str | None:
    """Our tensor name -> Hugging Face's (to_hf) or back; None for a name outside the map."""
    for pattern, target in _TO_HF if to_hf else _FROM_HF:
        if match := pattern.match(name):
            return target.replace("{i}", match.group(1)) if match.groups() else target
    return None


IMPORTED_STEP_DIR = "checkpoints/step_000000"
EXPORT_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
_SIZE_UNITS = {"": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_MOE = "mixture-of-experts layers are not supported"
# config.json fields whose value the Transformer cannot represent: (field, is this value outside it?, why)
_REFUSALS: list[tuple[str, Callable[[Any], bool], str]] = [
    ("attention_bias", bool, "the attention projections have no biases"),
    ("mlp_bias", bool, "the feed-forward projections have no biases"),
    ("num_local_experts", bool, _MOE),
    ("num_experts", bool, _MOE),
    ("n_routed_experts", bool, _MOE),
    ("num_experts_per_tok", bool, _MOE),
    ("sliding_window", lambda v: v is not None, "attention is full causal attention, without a sliding window"),
    ("use_sliding_window", bool, "attention is full causal attention, without a sliding window"),
    ("hidden_act", lambda v: v != "silu", "the feed-forward is SwiGLU, whose gate uses silu"),
    ("quantization_config", lambda v: v is not None, "quantized weights are not read; use the unquantized model"),
]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")  # torch.bfloat16 -> bfloat16, as config.json spells it


def parse_size(text: str) -> int:
    """'5GB' -> 5_000_000_000 (decimal units, as transformers); also KiB/MiB/GiB and plain bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]i?b)?\s*", str(text).lower())
    if not match or float(match.group(1)) <= 0:
        raise ScratchError(f"--max-shard-size wants a size such as 2GB or 500MB, got '{text}'")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or ""])


@contextmanager
def _staged_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside out, renamed to out when the block succeeds (flushed to disk first) and
    removed when it fails: a failure never leaves a half-written out, and an existing out is never touched."""
    atomic.check_output_dir(out, "output directory")
    if out.exists() and any(out.iterdir()):
        raise ScratchError(f"{out} already exists and is not empty; choose another output directory")
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        atomic.sync_tree(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
        atomic.sync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_tensors(weights: dict[str, torch.Tensor], cfg: ModelConfig, where: str, hf_names: bool) -> None:
    """Refuse weights that do not fill exactly the Transformer cfg describes (shapes from the meta device)."""
    with torch.device("meta"):
        expected = Transformer(cfg).state_dict()
    shown = (lambda k: rename(k, to_hf=True)) if hf_names else (lambda k: k)
    for key, tensor in weights.items():
        if key not in expected:
            raise ScratchError(f"{where}: tensor {shown(key)} has no place in this model")
        if tensor.shape != expected[key].shape:
            raise ScratchError(f"{where}: tensor {shown(key)} is {tuple(tensor.shape)}, the config makes it "
                               f"{tuple(expected[key].shape)}")
    missing = [k for k in expected if k not in weights]
    if missing:
        raise ScratchError(f"{where}: tensor {shown(missing[0])} is missing")


def _load_safetensors(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (OSError, SafetensorError) as exc:
        raise ScratchError(f"{where}: cannot read {path.name}: {str(exc).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------- export


def _checkpoint_weights(cfg: ModelConfig, ckpt: Path) -> dict[str, torch.Tensor]:
    """Whole tensors of a checkpoint: read directly from one safetensors file, or, for a run saved by
    several processes, gathered from its DCP shards into a model built in this one process."""
    if not is_sharded(ckpt):
        return _load_safetensors(ckpt / "model.safetensors", str(ckpt))
    model = build_model(cfg, "cpu")
    load_weights(model, ckpt)
    return model_state(model)


def hf_config(cfg: ModelConfig, tokenizer: BPETokenizer, dtype: torch.dtype) -> dict[str, Any]:
    """config.json of a LlamaForCausalLM with cfg's shapes (rope_theta and rope_scaling in the form
    every Llama loader reads; transformers 5 folds them into rope_parameters itself)."""
    rope_scaling = None
    if cfg.rope_scaling == "llama3":
        rope_scaling = {"rope_type": "llama3", "factor": cfg.rope_factor, "low_freq_factor": cfg.rope_low_freq_factor,
                        "high_freq_factor": cfg.rope_high_freq_factor,
                        "original_max_position_embeddings": cfg.rope_original_max_seq_len}
    pad = tokenizer.roles.get("pad")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": cfg.init_std,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.token_id(pad) if pad else None,
        "torch_dtype": _dtype_name(dtype),
        "use_cache": True,
    }
    if cfg.head == "score":
        # One label, read at the last token that is not pad_token_id: transformers needs the pad id to find
        # it (eos stands in for a tokenizer without a pad token, as in our pad_id).
        config.update(architectures=["LlamaForSequenceClassification"], id2label={"0": "LABEL_0"},
                      label2id={"LABEL_0": 0}, tie_word_embeddings=False, pad_token_id=tokenizer.pad_id)
    return config


def _hf_tokenizer_files(tokenizer: BPETokenizer, cfg: ModelConfig, chat_template: str | None
                        ) -> dict[str, str]:
    """tokenizer.json and tokenizer_config.json for AutoTokenizer (as PreTrainedTokenizerFast)."""
    tok = Tokenizer.from_str(tokenizer.to_json())
    if tok.post_processor is None:
        # Our documents are trained as <|bos|> text <|eos|>: a transformers user calling tokenizer(text)
        # (lm-eval, vLLM) must get the bos too. An imported tokenizer keeps the post-processor it came with.
        bos = tokenizer.roles["bos"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tokenizer.bos_id)])
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": tokenizer.roles["bos"],
        "eos_token": tokenizer.roles["eos"],
        "pad_token": tokenizer.roles.get("pad"),
        "model_max_length": cfg.max_seq_len,
        "clean_up_tokenization_spaces": False,  # decode must give back the text exactly, as ours does
    }
    if chat_template:
        config["chat_template"] = chat_template
    return {"tokenizer.json": tok.to_str(pretty=True), "tokenizer_config.json": json.dumps(config, indent=2)}


def _save_shards(weights: dict[str, torch.Tensor], out: Path, max_bytes: int) -> int:
    """Write weights as one model.safetensors, or as shards of at most max_bytes (a tensor larger than
    that gets a shard of its own) with the index transformers reads. Returns the number of files."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    meta = {"format": "pt"}  # transformers checks that the tensors are PyTorch's
    if len(shards) == 1:
        save_file(shards[0], out / "model.safetensors", metadata=meta)
        return 1
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, out / file, metadata=meta)
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return len(shards)


def export_hf(run_dir: str | Path, out_dir: str | Path, max_shard_size: str = "5GB", dtype: str | None = None
              ) -> dict[str, Any]:
    """Write the run's latest checkpoint as a Hugging Face Llama directory; returns what was written."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    max_bytes = parse_size(max_shard_size)
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise ScratchError(f"--dtype must be one of {', '.join(EXPORT_DTYPES)}, got '{dtype}'")
    cfg, tokenizer, ckpt = open_run(run_dir)
    weights = _checkpoint_weights(cfg.model, ckpt)
    _check_tensors(weights, cfg.model, str(ckpt), hf_names=False)
    if dtype is not None:
        weights = {k: v.to(EXPORT_DTYPES[dtype]) for k, v in weights.items()}
    out_dtype = weights["tok_embeddings.weight"].dtype

    # An imported model keeps its own template; a base model imported without one gets none.
    chat = find_chat_format(run_dir, tokenizer)
    scores = cfg.model.head == "score"
    if scores and chat is not None and tokenizer.pad_id in chat.stop_ids:
        raise ScratchError(f"{run_dir} is a reward model whose pad token (id {tokenizer.pad_id}) also ends a turn: "
                           "transformers, which reads the score at the last token that is not the pad token, would "
                           "read it one token early; use a tokenizer with a pad token of its own")
    config = hf_config(cfg.model, tokenizer, out_dtype)
    generation = {"bos_token_id": tokenizer.bos_id, "eos_token_id": generation_stop_ids(tokenizer, chat),
                  "pad_token_id": config["pad_token_id"]}
    with _staged_dir(out_dir) as tmp:
        files = _save_shards({rename(k, to_hf=True): v for k, v in weights.items()}, tmp, max_bytes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        if not scores:  # a reward model generates nothing
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        for name, text in _hf_tokenizer_files(tokenizer, cfg.model, chat.template if chat else None).items():
            (tmp / name).write_text(text)
    return {"out": out_dir, "step": ckpt.name, "files": files, "dtype": _dtype_name(out_dtype),
            "auto_class": "AutoModelForSequenceClassification" if scores else "AutoModelForCausalLM"}


# ---------------------------------------------------------------------------------------------- import


def _refuse(source: str, field: str, value: Any, why: str) -> ScratchError:
    return ScratchError(f"cannot import {source}: config.json {field} = {json.dumps(value)}: {why}")


def _finite_positive(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number > 0


def model_config_from_hf(hf: dict[str, Any], source: str) -> ModelConfig:
    """Our ModelConfig for a Llama config.json, or a ScratchError naming the field we cannot represent."""
    if hf.get("model_type") != "llama":
        raise _refuse(source, "model_type", hf.get("model_type"), "only Llama-architecture models (llama) import")
    if hf.get("architectures", ["LlamaForCausalLM"]) != ["LlamaForCausalLM"]:
        raise _refuse(source, "architectures", hf["architectures"], "only LlamaForCausalLM imports")
    for field, outside, why in _REFUSALS:
        if field in hf and outside(hf[field]):
            raise _refuse(source, field, hf[field], why)
    # transformers 5 writes rope_parameters (theta inside); earlier versions rope_theta + rope_scaling.
    rope_field = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    rope = hf.get(rope_field) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "llama3"):
        raise _refuse(source, f"{rope_field}.rope_type", rope_type, "only plain and llama3 RoPE are supported")
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise _refuse(source, "partial_rotary_factor", rope.get("partial_rotary_factor",
                      hf.get("partial_rotary_factor")), "RoPE rotates the whole head")
    theta_field = f"{rope_field}.rope_theta" if "rope_theta" in rope else "rope_theta"
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    if not _finite_positive(theta):
        raise _refuse(source, theta_field, theta, "RoPE's base must be a finite positive number, such as 10000")
    try:
        dim, n_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
        head_dim = int(hf.get("head_dim") or dim // n_heads)
        if head_dim * n_heads != dim:
            raise _refuse(source, "head_dim", head_dim, f"heads must split hidden_size {dim} evenly (our head "
                          "dim is hidden_size / num_attention_heads)")
        if head_dim % 2:
            raise _refuse(source, "head_dim", head_dim, "rotary embeddings need an even head dim")
        max_seq_len = int(hf.get("max_position_embeddings", 2048))
        scaling = {}
        if rope_type == "llama3":
            scaling = dict(rope_scaling="llama3", rope_factor=float(rope["factor"]),
                           rope_low_freq_factor=float(rope["low_freq_factor"]),
                           rope_high_freq_factor=float(rope["high_freq_factor"]),
                           rope_original_max_seq_len=int(rope.get("original_max_position_embeddings", max_seq_len)))
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]), dim=dim, n_layers=int(hf["num_hidden_layers"]), n_heads=n_heads,
            n_kv_heads=int(hf.get("num_key_value_heads") or n_heads), ffn_hidden_dim=int(hf["intermediate_size"]),
            max_seq_len=max_seq_len, rope_theta=float(theta),
            norm_eps=float(hf.get("rms_norm_eps", 1e-6)), tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=float(hf.get("initializer_range", 0.02)), **scaling)
    except KeyError as exc:
        raise ScratchError(f"cannot import {source}: config.json lacks {exc.args[0]}") from None
    except (TypeError, ValueError) as exc:
        raise ScratchError(f"cannot import {source}: config.json holds a malformed value ({exc})") from None


def _read_json(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScratchError(f"cannot import {source}: {path.name} is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise ScratchError(f"cannot import {source}: {path.name} is not a JSON object")
    return data


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json writes a special token as a string or as an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


def _starts_with_bos(tok: Tokenizer, bos: str) -> bool:
    """Whether the tokenizer's post-processor puts bos before a text, as transformers' tokenizer(text) then
    does (transformers 5 reads this from tokenizer.json alone, whatever add_bos_token says elsewhere)."""
    with_specials = tok.encode("x", add_special_tokens=True).ids
    return with_specials[:1] == [tok.token_to_id(bos)] != tok.encode("x", add_special_tokens=False).ids[:1]


def _eos_ids(src: Path, hf: dict[str, Any], tok: Tokenizer, source: str) -> list[int]:
    """Every end-of-sequence id the model names: generation_config.json's eos_token_id (where transformers'
    generate stops) and config.json's; each is one id or a list (Llama 3 instruct: <|eot_id|> and more)."""
    generation = src / "generation_config.json"
    named = {"generation_config.json": _read_json(generation, source) if generation.is_file() else {},
             "config.json": hf}
    ids: list[int] = []
    for file, fields in named.items():
        value = fields.get("eos_token_id")
        for token_id in value if isinstance(value, list) else [] if value is None else [value]:
            if not isinstance(token_id, int) or isinstance(token_id, bool) or not 0 <= token_id < tok.get_vocab_size():
                raise ScratchError(f"cannot import {source}: {file} eos_token_id {json.dumps(value)} names "
                                   f"{token_id!r}, which is not a token of its tokenizer")
            ids.append(token_id)
    return ids


def _import_tokenizer(src: Path, hf: dict[str, Any], source: str) -> tuple[BPETokenizer, str | None]:
    """The tokenizer with its conventions (bos/eos/pad roles, whether a text starts with bos, every
    end-of-sequence id), and its chat template (None if it has none)."""
    if not (src / "tokenizer.json").is_file():
        raise ScratchError(f"cannot import {source}: it has no tokenizer.json (a fast tokenizer is needed; "
                           "save one with AutoTokenizer.from_pretrained(...).save_pretrained(...))")
    tok_cfg = _read_json(src / "tokenizer_config.json", source) if (src / "tokenizer_config.json").is_file() else {}
    try:
        tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
        raise ScratchError(f"cannot import {source}: tokenizer.json is unreadable ({str(exc).splitlines()[0]})"
                           ) from None
    roles: dict[str, str | None] = {}
    for role in ("bos", "eos", "pad"):
        name = _token_content(tok_cfg.get(f"{role}_token"))
        token_id = hf.get(f"{role}_token_id")
        if name is None and token_id is not None:  # config.json may list several eos ids: the first is the eos
            name = tok.id_to_token(token_id[0] if isinstance(token_id, list) else token_id)
        roles[role] = name
    for role in ("bos", "eos"):
        if roles[role] is None:
            raise ScratchError(f"cannot import {source}: its tokenizer names no {role} token "
                               f"(tokenizer_config.json {role}_token, config.json {role}_token_id)")
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # several named templates: the default one is the chat format
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if template is None and (src / CHAT_TEMPLATE_FILE).is_file():  # where transformers 5 saves it
        template = (src / CHAT_TEMPLATE_FILE).read_text()
    tokenizer = BPETokenizer(tok, roles, add_bos=_starts_with_bos(tok, roles["bos"]),
                             eos_ids=_eos_ids(src, hf, tok, source))
    return tokenizer, template


def _read_hf_weights(src: Path, cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """All tensors under our names, from one model.safetensors or the shards its index lists."""
    index = src / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(_read_json(index, source).get("weight_map", {}).values()))
    elif (src / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise ScratchError(f"cannot import {source}: no model.safetensors or model.safetensors.index.json "
                           "(only safetensors weights are read)")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        for key, tensor in _load_safetensors(src / file, f"cannot import {source}").items():
            ours = rename(key, to_hf=False)
            if ours is None and key.endswith("rotary_emb.inv_freq"):
                continue  # older checkpoints saved the RoPE frequencies; ours are recomputed from the config
            if ours is None:
                raise ScratchError(f"cannot import {source}: tensor {key} has no place in a Llama model")
            weights[ours] = tensor
    if cfg.tie_embeddings:
        weights.pop("output.weight", None)  # some tied checkpoints store the head's copy too; the embedding wins
    _check_tensors(weights, cfg, f"cannot import {source}", hf_names=True)
    return weights


def _resolve_source(source: str) -> Path:
    """A local directory as is; an owner/name hub id downloaded (config, tokenizer, safetensors only)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists() or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise ScratchError(f"{source} is not a model directory, nor a hub id such as meta-llama/Llama-3.2-1B")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, allow_patterns=["*.json", "*.safetensors", "*.jinja"]))
    except Exception as exc:  # network, authentication and missing-repository errors alike
        raise ScratchError(f"cannot download {source} from the Hugging Face hub: {str(exc).splitlines()[0]}"
                           ) from None


def import_hf(source: str, out_run_dir: str | Path) -> dict[str, Any]:
    """Turn a Llama-architecture checkpoint into a run directory; returns a summary of what came in."""
    out = Path(out_run_dir)
    src = _resolve_source(source)
    if not (src / "config.json").is_file():
        raise ScratchError(f"cannot import {source}: it has no config.json")
    hf = _read_json(src / "config.json", source)
    model_cfg = model_config_from_hf(hf, source)
    tokenizer, chat_template = _import_tokenizer(src, hf, source)
    if tokenizer.vocab_size > model_cfg.vocab_size:
        raise ScratchError(f"cannot import {source}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                           f"model's vocab_size is {model_cfg.vocab_size}")
    cfg = Config(model=model_cfg)
    cfg.data.vocab_size = tokenizer.vocab_size
    t = cfg.train  # fit the training defaults inside the model's context
    t.seq_len = min(t.seq_len, model_cfg.max_seq_len)
    t.global_batch_tokens = t.micro_batch_size * t.seq_len * max(1, t.global_batch_tokens // (t.micro_batch_size
                                                                                                * t.seq_len))
    validate(cfg)
    weights = _read_hf_weights(src, model_cfg, source)
    with _staged_dir(out) as tmp:
        cfg.save(tmp / CONFIG_FILE)
        tokenizer.save(tmp / TOKENIZER_FILE)
        (tmp / SPECIAL_TOKENS_FILE).write_text(json.dumps(tokenizer.conventions(), indent=2))
        if chat_template:
            (tmp / CHAT_TEMPLATE_FILE).write_text(chat_template)
        ckpt = tmp / IMPORTED_STEP_DIR
        ckpt.mkdir(parents=True)
        save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
        (ckpt / "state.json").write_text(json.dumps({"step": 0, "imported_from": source}, indent=2))
    return {"out": out, "model": model_cfg, "tokenizer_vocab": tokenizer.vocab_size,
            "dtype": _dtype_name(weights["tok_embeddings.weight"].dtype)}
