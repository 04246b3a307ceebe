"""Hugging Face interop, proven against transformers itself: random Llama models built here come in
with the same logits and greedy tokens, a model pretrained here goes out and transformers computes the
same logits, text and token ids, and export -> import -> export changes no bit."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from tokenizers import Tokenizer, pre_tokenizers, processors, trainers

from scratchlm.cli import main
from scratchlm.errors import ScratchError
from scratchlm.infer.engine import Engine, SamplingParams
from scratchlm.infer.generate import stop_ids
from scratchlm.interop.hf import CHAT_TEMPLATE_FILE, export_hf, import_hf
from scratchlm.model import Transformer
from scratchlm.run import load_run
from scratchlm.tokenizer import new_bpe

from conftest import FAST, ROOT, WORDS, run_cli, write_jsonl

transformers = pytest.importorskip("transformers")

BEGIN, END = "<|begin_of_text|>", "<|end_of_text|>"
LLAMA_CHAT = "{% for m in messages %}<|start|>{{ m['role'] }}: {{ m['content'] }}{% endfor %}"
TOL = 1e-4


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def llama_tokenizer() -> Tokenizer:
    """A byte-level BPE with Llama 3's special tokens, added after training so their ids are not ours
    (0..6), and a post-processor that prepends <|begin_of_text|> as Llama 3's does."""
    tok = new_bpe()
    tok.train_from_iterator(sentences(300), trainers.BpeTrainer(
        vocab_size=330, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens([BEGIN, END])
    tok.post_processor = processors.TemplateProcessing(single=f"{BEGIN} $A",
                                                       special_tokens=[(BEGIN, tok.token_to_id(BEGIN))])
    return tok


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights of unit scale (norm gains around 1, not exactly 1), so logits are O(1) and a swapped
    or mis-shaped tensor anywhere changes them far beyond the tolerance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.3 * noise if p.ndim == 1 else noise / math.sqrt(p.shape[-1]))


def save_llama(path: Path, tokenizer: Tokenizer, dtype: torch.dtype = torch.float32, pad_vocab: int = 0,
               max_shard_size: str | None = None, seed: int = 0, **config) -> Path:
    """A random LlamaForCausalLM with the tokenizer beside it, as save_pretrained writes them."""
    hf_config = transformers.LlamaConfig(
        vocab_size=tokenizer.get_vocab_size() + pad_vocab, num_hidden_layers=2, max_position_embeddings=64,
        bos_token_id=tokenizer.token_to_id(BEGIN), eos_token_id=tokenizer.token_to_id(END), **config)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(hf_config)
    randomize(model, seed)
    model.to(dtype).save_pretrained(path, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BEGIN, eos_token=END,
                                         clean_up_tokenization_spaces=False,
                                         chat_template=LLAMA_CHAT).save_pretrained(path)
    return path


def hf_model(path: Path) -> torch.nn.Module:
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def hf_greedy(model: torch.nn.Module, prompt: list[int], n: int, stops: set[int]) -> list[int]:
    """transformers' greedy continuation, cut where our engine stops (before a stop token)."""
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                         eos_token_id=sorted(stops), pad_token_id=min(stops))[0, len(prompt):].tolist()
    return out[:-1] if out and out[-1] in stops else out


def max_logit_diff(ours: Transformer, theirs: torch.nn.Module, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours(tokens) - theirs(tokens).logits).abs().max().item()


def report(name: str, diff: float) -> None:
    print(f"\n{name}: max |logit difference| {diff:.2e}")


# The shapes a Llama checkpoint comes in. head_dim 24 and 40 are neither a power of two nor 64/128.
SHAPES = {
    "mha-untied-fp32": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, intermediate_size=160,
                            tie_word_embeddings=False),
    "gqa-tied-bf16-head24": dict(hidden_size=96, num_attention_heads=4, num_key_value_heads=2, intermediate_size=200,
                                 tie_word_embeddings=True, dtype=torch.bfloat16, rope_theta=500000.0),
    "mqa-head40-padded-vocab": dict(hidden_size=80, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=144, tie_word_embeddings=False, pad_vocab=13),
    "gqa-llama3-rope": dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                             "original_max_position_embeddings": 16}),
    "gqa-sharded": dict(hidden_size=64, num_attention_heads=8, num_key_value_heads=2, intermediate_size=128,
                        tie_word_embeddings=False, max_shard_size="60KB"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_imported_model_matches_transformers(shape, llama_tokenizer, tmp_path):
    src = save_llama(tmp_path / "hf", llama_tokenizer, seed=list(SHAPES).index(shape), **SHAPES[shape])
    if "max_shard_size" in SHAPES[shape]:
        index = json.loads((src / "model.safetensors.index.json").read_text())
        assert len(set(index["weight_map"].values())) == len(list(src.glob("model-*.safetensors"))) > 1
    import_hf(str(src), tmp_path / "run")
    cfg, tokenizer, ours = load_run(tmp_path / "run")
    theirs = hf_model(src)
    assert [tokenizer.bos_id, tokenizer.eos_id] == [llama_tokenizer.token_to_id(t) for t in (BEGIN, END)]
    assert (tmp_path / "run" / CHAT_TEMPLATE_FILE).read_text() == LLAMA_CHAT

    tokens = torch.randint(0, llama_tokenizer.get_vocab_size(), (2, 40), generator=torch.Generator().manual_seed(0))
    diff = max_logit_diff(ours, theirs, tokens)
    report(shape, diff)
    assert diff < TOL
    if cfg.model.rope_scaling == "llama3":  # the scaling is visible at these lengths: ignoring it would fail
        plain = Transformer(dataclasses.replace(cfg.model, rope_scaling="none"))
        plain.load_state_dict(ours.state_dict())
        assert max_logit_diff(plain, theirs, tokens) > 100 * TOL

    prompt = tokenizer.encode("the cat sat on a mat", bos=True)
    stops = stop_ids(tmp_path / "run", tokenizer)
    ours_out = Engine(ours, stops).generate([prompt], SamplingParams(max_new_tokens=16, temperature=0))[0]
    ours_ids = ours_out.token_ids[:-1] if ours_out.finish_reason == "stop" else ours_out.token_ids
    assert ours_ids == hf_greedy(theirs, prompt, 16, stops)

    # And back out: the imported run, exported, is the same model to transformers.
    exported = hf_model(export_hf(tmp_path / "run", tmp_path / "out")["out"])
    assert max_logit_diff(ours, exported, tokens) < TOL


def test_import_then_export_gives_back_the_source_bits(llama_tokenizer, tmp_path):
    """Import stores the source's tensors as they are (bf16 stays bf16, tied head not duplicated), so
    exporting the imported run gives back the source's tensors bit for bit."""
    src = save_llama(tmp_path / "hf", llama_tokenizer, dtype=torch.bfloat16, tie_word_embeddings=True,
                     hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128)
    import_hf(str(src), tmp_path / "run")
    export_hf(tmp_path / "run", tmp_path / "out")
    assert_same_tensors(load_file(src / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors"))


def cli(capsys, *args: str) -> str:
    """`scratchlm ARGS` in this process (the same code path as the command, without a new interpreter
    importing torch), returning what it printed."""
    capsys.readouterr()
    main(list(args))
    return capsys.readouterr().out


def test_cli_import_then_generate(llama_tokenizer, tmp_path, capsys):
    src = save_llama(tmp_path / "hf", llama_tokenizer, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, seed=7)
    assert "imported" in cli(capsys, "import-hf", str(src), str(tmp_path / "run"))
    prompt = "the dog ran to the house"
    text = cli(capsys, "generate", str(tmp_path / "run"), "--prompt", prompt, "--temperature", "0",
               "--max-new-tokens", "12")
    hf_tok = transformers.AutoTokenizer.from_pretrained(src)
    stops = {llama_tokenizer.token_to_id(BEGIN), llama_tokenizer.token_to_id(END)}
    assert text == hf_tok.decode(hf_greedy(hf_model(src), hf_tok(prompt).input_ids, 12, stops)) + "\n"
    # An imported run holds weights, not a training state: resuming it is refused in one line.
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "2"])
    assert exit_info.value.code == 2 and "holds weights only" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- a model trained here


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A run pretrained here for a few steps, and its export through the CLI."""
    root = tmp_path_factory.mktemp("trained")
    data = write_jsonl(root / "docs.jsonl", 200)
    run_cli("pretrain", "--data", str(data), "--out", str(root / "run"), "--max-steps", "6", "--samples", "0", *FAST)
    main(["export-hf", str(root / "run"), str(root / "hf")])
    return root / "run", root / "hf"


def test_exported_model_matches_ours(trained):
    run, out = trained
    _, tokenizer, ours = load_run(run)
    theirs = hf_model(out)
    tokens = torch.randint(0, tokenizer.vocab_size, (2, 48), generator=torch.Generator().manual_seed(1))
    diff = max_logit_diff(ours, theirs, tokens)
    report("exported pretrained run", diff)
    assert diff < TOL


def test_exported_greedy_text_matches_cli(trained, capsys):
    run, out = trained
    prompt = "the cat sat on"
    text = cli(capsys, "generate", str(run), "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "24")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    generation = json.loads((out / "generation_config.json").read_text())
    expected = hf_tok.decode(hf_greedy(hf_model(out), hf_tok(prompt).input_ids, 24, set(generation["eos_token_id"])))
    assert expected  # a run of a few steps still writes words
    assert text == expected + "\n"


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80) | st.text(alphabet=" \n\tabc123.!é漢🙂", max_size=40))
def test_exported_tokenizer_gives_our_ids(exported_tokenizers, text):
    ours, theirs = exported_tokenizers
    ids = theirs(text).input_ids
    assert ids == ours.encode(text, bos=True)
    assert theirs.decode(ids[1:]) == text


@pytest.fixture(scope="module")
def exported_tokenizers(trained):
    run, out = trained
    return load_run(run)[1], transformers.AutoTokenizer.from_pretrained(out)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key].flatten().view(torch.uint8), b[key].flatten().view(torch.uint8)), key


def read_weights(out: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(out.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_round_trip_is_bit_exact(trained, tmp_path):
    _, out = trained
    import_hf(str(out), tmp_path / "run")
    again = export_hf(tmp_path / "run", tmp_path / "again")["out"]
    assert_same_tensors(read_weights(out), read_weights(again))
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert json.loads((again / name).read_text()) == json.loads((out / name).read_text()), name


def test_sharded_bf16_export_loads(trained, tmp_path):
    run, _ = trained
    out = export_hf(run, tmp_path / "hf", max_shard_size="100KB", dtype="bf16")["out"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == len(list(out.glob("model-*.safetensors"))) > 1
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _, tokenizer, ours = load_run(run)
    ours = ours.to(torch.bfloat16).float()  # the same rounding the export applied
    assert all(t.dtype == torch.bfloat16 for t in read_weights(out).values())
    tokens = torch.randint(0, tokenizer.vocab_size, (2, 32), generator=torch.Generator().manual_seed(2))
    diff = max_logit_diff(ours, hf_model(out), tokens)
    report("sharded bf16 export", diff)
    assert diff < TOL


def test_export_refuses_a_nonempty_output_and_leaves_it_alone(trained, tmp_path):
    run, _ = trained
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    with pytest.raises(ScratchError, match="already exists"):
        export_hf(run, tmp_path / "hf")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"] and (tmp_path / "hf" / "keep.txt").read_text() == "mine"


def test_interop_does_not_import_transformers():
    code = "import sys, scratchlm.interop.hf; assert 'transformers' not in sys.modules, 'transformers imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(ROOT / "src")})


# ---------------------------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def llama_dir(llama_tokenizer, tmp_path_factory) -> Path:
    return save_llama(tmp_path_factory.mktemp("base") / "hf", llama_tokenizer, hidden_size=32, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=64)


REFUSALS = {
    "attention_bias": {"attention_bias": True},
    "mlp_bias": {"mlp_bias": True},
    "num_local_experts": {"num_local_experts": 8, "num_experts_per_tok": 2},
    "sliding_window": {"sliding_window": 4096},
    "hidden_act": {"hidden_act": "gelu"},
    "rope_parameters.rope_type": {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
    "rope_scaling.rope_type": {"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}},
    "model_type": {"model_type": "mistral"},
    "architectures": {"architectures": ["LlamaForSequenceClassification"]},
    "head_dim": {"head_dim": 24},
    "quantization_config": {"quantization_config": {"quant_method": "gptq", "bits": 4}},
}


@pytest.mark.parametrize("field", list(REFUSALS))
def test_import_refuses_what_the_model_cannot_represent(field, llama_dir, tmp_path):
    src = shutil.copytree(llama_dir, tmp_path / "hf")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps(config | REFUSALS[field]))
    with pytest.raises(ScratchError, match=f"config.json {field} ") as info:
        import_hf(str(src), tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("theta", [float("nan"), float("inf"), 0.0, -10000.0])
@pytest.mark.parametrize("field", ["rope_theta", "rope_parameters.rope_theta"])
def test_import_refuses_a_rope_theta_that_is_not_a_positive_number(field, theta, llama_dir, tmp_path):
    """json reads NaN and Infinity; neither makes rotary frequencies (inf would rotate every pair but the first
    by nothing), nor does a base of 0 or below."""
    src = shutil.copytree(llama_dir, tmp_path / "hf")
    config = json.loads((src / "config.json").read_text())
    rope = {"rope_parameters": {"rope_type": "default", "rope_theta": theta}} if "." in field else \
        {"rope_parameters": None, "rope_theta": theta}
    (src / "config.json").write_text(json.dumps(config | rope))
    with pytest.raises(ScratchError, match=f"config.json {field} = ") as info:
        import_hf(str(src), tmp_path / "run")
    assert "\n" not in str(info.value) and "positive" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_import_refuses_a_missing_tokenizer_through_the_cli(llama_dir, tmp_path, capsys):
    src = shutil.copytree(llama_dir, tmp_path / "hf")
    (src / "tokenizer.json").unlink()
    with pytest.raises(SystemExit) as info:
        cli(capsys, "import-hf", str(src), str(tmp_path / "run"))
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "tokenizer.json" in err
    assert not (tmp_path / "run").exists()
