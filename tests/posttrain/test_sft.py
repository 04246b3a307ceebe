"""scratchlm sft as a user runs it: lineage, masks, the normalisation that makes layouts agree, packing,
exact resume, chat, bad input, and an imported transformers Llama fine-tuned and loaded back."""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from scratchlm.chat import NativeChat
from scratchlm.data.chat_data import Skips
from scratchlm.model import build_model
from scratchlm.posttrain.sft import Row, collate, pack, to_rows
from scratchlm.train.metrics import read_metrics
from scratchlm.train.stage import IGNORE, next_token_loss

from conftest import ROOT, run_cli, small_model_config

sys.path.insert(0, str(ROOT / "tests" / "parallel"))
from test_cli_errors import fails  # noqa: E402
from test_layouts import torchrun  # noqa: E402

# The base run's model, with a context long enough for short conversations of a byte-level vocabulary.
SFT = ["--train.seq_len", "64", "--train.global_batch_tokens", "512", "--train.precision", "fp32",
       "--train.eval_every", "3", "--train.log_every", "1", "--optim.warmup_steps", "1"]


def write_conversations(path: Path, n: int, seed: int = 0) -> Path:
    """Short arithmetic chats of uneven length, some with a system message and a second exchange."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            messages = [{"role": "user", "content": f"{a}+{b}"}, {"role": "assistant", "content": str(a + b)}]
            if i % 3 == 0:
                messages = [{"role": "system", "content": "sum"}, *messages, {"role": "user", "content": "x2"},
                            {"role": "assistant", "content": f"it is {2 * (a + b)}"}]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    return write_conversations(tmp_path_factory.mktemp("chats") / "chats.jsonl", 300)


def sft_losses(run: Path) -> list[float]:
    records = read_metrics(run)
    return [r["loss"] for r in records] + [records[-1]["val_loss"]]


def test_sft_run_records_its_lineage_and_learns(base, chats, tmp_path):
    out = tmp_path / "sft"
    proc = run_cli("sft", str(base), "--data", str(chats), "--out", str(out), "--max-steps", "6", *SFT)
    said = proc.stdout + proc.stderr
    assert "starting from the weights of" in said and "conversations" in said
    cfg = (out / "config.yaml").read_text()
    assert "stage: sft" in cfg and f"parent: {base.resolve()}" in cfg
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, 7))
    assert all(0 <= r["padding"] < 1 and r["trained_tokens"] > 0 for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    reply = run_cli("chat", str(out), "--prompt", "3+4", "--temperature", "0", "--max-new-tokens", "5")
    assert reply.stdout.endswith("\n") and len(reply.stdout.splitlines()) <= 2  # the reply alone
    assert reply.stderr.count("note:") == 0  # a fine-tuned model chats without the base-model warning
    base_reply = run_cli("chat", str(base), "--prompt", "3+4", "--temperature", "0", "--max-new-tokens", "3")
    assert "never saw the chat format" in base_reply.stderr


def test_only_assistant_tokens_are_trained(base):
    from scratchlm.run import load_tokenizer

    fmt = NativeChat(load_tokenizer(base))
    chat = [{"role": "system", "content": "sum"}, {"role": "user", "content": "1+2"},
            {"role": "assistant", "content": "3"}, {"role": "user", "content": "x2"},
            {"role": "assistant", "content": "6"}]
    (row,) = to_rows([chat], fmt, 64, Skips(), "test")
    trained = [fmt.tokenizer.decode([t]) for t in row.targets if t != IGNORE]
    assert "".join(trained) == "3<|end|>6<|end|>"
    too_long = [{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": "ok"}]
    skips = Skips()
    assert to_rows([too_long], fmt, 64, skips, "test") == []
    assert "longer than the context" in skips.summary()


def test_with_the_calculator_its_results_are_not_trained(base):
    from scratchlm.run import load_tokenizer

    fmt = NativeChat(load_tokenizer(base))
    chat = [{"role": "user", "content": "1+2*3"}, {"role": "assistant", "content": "1 + 2 * 3 = <<1+2*3=7>>7"}]
    (row,) = to_rows([chat], fmt, 64, Skips(), "test", tools=("calculator",))
    assert fmt.tokenizer.decode([t for t in row.targets if t != IGNORE]) == "1 + 2 * 3 = <<1+2*3=7<|end|>"
    (plain,) = to_rows([chat], fmt, 64, Skips(), "test")
    assert fmt.tokenizer.decode([t for t in plain.targets if t != IGNORE]) == "1 + 2 * 3 = <<1+2*3=7>>7<|end|>"


@pytest.mark.parametrize("layout", ["micro4", "fsdp2"])
def test_micro_batches_and_data_parallel_give_the_same_sft_losses(base, chats, tmp_path, layout):
    """Masked, uneven conversations: one micro-batch of 8, four of 2, and FSDP on 2 ranks train the same
    model (fp32): per-step losses and the final validation loss agree."""
    args = ["sft", str(base), "--data", str(chats), "--max-steps", "5", *SFT]
    run_cli(*args, "--out", str(tmp_path / "one"), "--train.micro_batch_size", "8")
    if layout == "micro4":
        run_cli(*args, "--out", str(tmp_path / "other"), "--train.micro_batch_size", "2")
    else:
        torchrun(2, *args, "--out", str(tmp_path / "other"), "--train.micro_batch_size", "4")
    one, other = sft_losses(tmp_path / "one"), sft_losses(tmp_path / "other")
    assert max(abs(a - b) / abs(a) for a, b in zip(one, other, strict=True)) < 1e-5, (one, other)


def test_resume_continues_sft_bit_for_bit(base, chats, tmp_path):
    args = ["sft", str(base), "--data", str(chats), *SFT, "--optim.lr_decay_steps", "6", "--train.save_every", "3"]
    run_cli(*args, "--out", str(tmp_path / "straight"), "--max-steps", "6")
    run_cli(*args, "--out", str(tmp_path / "split"), "--max-steps", "3")
    run_cli(*args, "--out", str(tmp_path / "split"), "--max-steps", "6", "--resume")
    assert sft_losses(tmp_path / "split") == sft_losses(tmp_path / "straight")


def test_packed_rows_give_the_losses_of_their_conversations_one_by_one():
    model = build_model(small_model_config(), seed=0).eval()
    rng = random.Random(0)
    rows = []
    for n in (5, 9, 3, 12, 7):
        ids = [rng.randrange(300) for _ in range(n + 1)]
        targets = [t if rng.random() < 0.6 else IGNORE for t in ids[1:]]
        rows.append(Row(ids[:-1], targets))
    packed = pack(rows, 20)
    assert all(sum(len(r.inputs) for r in group) <= 20 for group in packed) and len(packed) < len(rows)
    batch = collate(packed, pad_id=2, width=20)
    assert "segments" in batch
    with torch.no_grad():
        together = next_token_loss(model, batch)
        alone = sum(next_token_loss(model, collate([[r]], pad_id=2)) for r in rows)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_packed_sft_trains(base, chats, tmp_path):
    run_cli("sft", str(base), "--data", str(chats), "--out", str(tmp_path / "p"), "--max-steps", "3", *SFT,
            "--sft.packing", "true")
    records = read_metrics(tmp_path / "p")
    assert len(records) == 3 and all(r["padding"] < 0.5 for r in records)


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_bad_input_is_one_clear_line(base, chats, tmp_path, capsys):
    cases = [
        (["sft", str(tmp_path / "nope"), "--out", str(tmp_path / "o1")], "does not exist"),
        (["sft", str(base), "--data", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "o2"), *SFT],
         "no usable conversation"),
    ]
    (tmp_path / "empty.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.yaml").write_text((base / "config.yaml").read_text())
    cases.append((["sft", str(tmp_path / "noweights"), "--out", str(tmp_path / "o3")], "no checkpoint"))
    for args, message in cases:
        assert message in fails(capsys, *args), args
    before = tree_digest(base)
    assert "--resume" in fails(capsys, "sft", base, "--data", chats, "--out", base, *SFT)  # it holds another run
    assert tree_digest(base) == before


def test_imported_llama_fine_tunes_and_loads_back_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    sys.path.insert(0, str(ROOT / "tests" / "interop"))
    from test_chat_template import save_llama3

    src = save_llama3(tmp_path / "hf")
    run_cli("import-hf", str(src), str(tmp_path / "imported"))
    chats = write_conversations(tmp_path / "c.jsonl", 400)
    run_cli("sft", str(tmp_path / "imported"), "--data", str(chats), "--out", str(tmp_path / "sft"), "--max-steps",
            "2", "--train.seq_len", "64", "--train.global_batch_tokens", "256", "--train.precision", "fp32")
    assert (tmp_path / "sft" / "chat_template.jinja").is_file()  # the parent's conventions came along
    run_cli("export-hf", str(tmp_path / "sft"), str(tmp_path / "out"))
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    chat = [{"role": "user", "content": "3+4"}]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
    from scratchlm.chat import load_chat_format

    assert ids == load_chat_format(tmp_path / "sft").prompt_ids(chat)
    generation = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
    original = transformers.GenerationConfig.from_pretrained(src)
    assert set(original.eos_token_id) <= set(generation.eos_token_id)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=3, do_sample=False)
    assert out.shape[1] > len(ids)
