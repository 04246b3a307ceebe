"""The chat format through transformers. The template export-hf writes renders, with transformers'
apply_chat_template, exactly the ids of scratchlm's renderer on random conversations, with and without
the generation prompt, and the trained mask is what transformers' own renders add for each assistant
turn. Literal special-token text stays text, as transformers keeps it with sanitize_control_tokens=True
(and, as documented, not by default). A model imported with a Llama 3 style template, a bos-adding
tokenizer and several end-of-turn ids keeps all of them: our render equals transformers', the run
records its stop ids, and its export carries them again."""

from __future__ import annotations

import inspect
import json
import random
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, pre_tokenizers, processors, trainers

from scratchlm.chat import NATIVE_TEMPLATE, ChatFormat, load_chat_format
from scratchlm.config import Config
from scratchlm.errors import ScratchError
from scratchlm.interop.hf import export_hf, import_hf
from scratchlm.model import build_model
from scratchlm.run import SPECIAL_TOKENS_FILE, load_tokenizer, start_run
from scratchlm.tokenizer import ASSISTANT, BOS, END_OF_TURN, SPECIAL_TOKENS, USER, new_bpe, train_tokenizer
from scratchlm.train.checkpoint import save_checkpoint

from conftest import WORDS, small_model_config

transformers = pytest.importorskip("transformers")
SANITIZES = "sanitize_control_tokens" in inspect.signature(transformers.PreTrainedTokenizerBase.apply_chat_template
                                                           ).parameters


def sentences(n: int, seed: int = 0) -> list[str]:
    """Training text, with angle brackets and bars so that BPE learns tokens such as " <|" that reach
    across the edge of a literal special token (where encoding it apart from its neighbours shows)."""
    rng = random.Random(seed)
    words = [*WORDS, "<|", "|>", "<|x|>"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 30))) for _ in range(n)]


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def hf_ids(hf_tok, chat: list[dict], add_generation_prompt: bool = False, **kwargs) -> list[int]:
    return hf_tok.apply_chat_template(chat, add_generation_prompt=add_generation_prompt, tokenize=True,
                                      return_dict=False, **kwargs)


def assert_same_as_transformers(fmt: ChatFormat, hf_tok, chat: list[dict], add_generation_prompt: bool) -> None:
    """Our ids are transformers' ids, and our trained tokens are those that transformers' render of
    messages[:i+1] adds to its render of messages[:i] with the generation prompt, for each assistant i."""
    ours = fmt.render(chat, add_generation_prompt)
    theirs = hf_ids(hf_tok, chat, add_generation_prompt)
    assert ours.ids == theirs
    expected = [False] * len(theirs)
    for i, message in enumerate(chat):
        if message["role"] == "assistant":
            prompt, through = hf_ids(hf_tok, chat[:i], True), hf_ids(hf_tok, chat[:i + 1])
            assert theirs[:len(prompt)] == prompt and theirs[:len(through)] == through
            expected[len(prompt):len(through)] = [True] * (len(through) - len(prompt))
    assert ours.trained == expected


def conversations(content: st.SearchStrategy[str]) -> st.SearchStrategy[list[dict]]:
    """An optional system message (possibly empty), user/assistant turns, maybe a last user message."""
    turn = st.tuples(content, content).map(lambda qa: [msg("user", qa[0]), msg("assistant", qa[1])])
    return st.builds(lambda system, turns, last: ([msg("system", system)] if system is not None else [])
                     + [m for t in turns for m in t] + ([msg("user", last)] if last is not None else []),
                     st.none() | st.just("") | content, st.lists(turn, max_size=3), st.none() | content
                     ).filter(bool)


def text_without(specials: list[str]) -> st.SearchStrategy[str]:
    pieces = ["the cat", " sat", "\n", "  ", "\t", "🦙", "漢字かな", "é", "e\u0301", "12345", "<|", "|>", "\r\n"]
    return (st.text(max_size=24) | st.lists(st.sampled_from(pieces), max_size=6).map("".join)).filter(
        lambda text: not any(s in text for s in specials))


# ---------------------------------------------------------------------------------- a run trained here


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> tuple[Path, Path]:
    """A run of our own (tokenizer trained here, a checkpoint of a small model) and its export."""
    root = tmp_path_factory.mktemp("native")
    tokenizer = train_tokenizer(sentences(300), 400)
    cfg = Config(model=small_model_config(vocab_size=400))
    cfg.data.vocab_size, cfg.train.seq_len, cfg.train.global_batch_tokens = 400, 64, 64 * cfg.train.micro_batch_size
    start_run(root / "run", cfg, tokenizer)
    save_checkpoint(root / "run", 1, build_model(cfg.model), None, {}, keep=1)
    export_hf(root / "run", root / "hf")
    return root / "run", root / "hf"


@pytest.fixture(scope="module")
def native_pair(native) -> tuple[ChatFormat, object]:
    run, out = native
    return load_chat_format(run), transformers.AutoTokenizer.from_pretrained(out)


def test_export_writes_our_template_and_every_end_of_turn_id(native):
    run, out = native
    tokenizer = load_tokenizer(run)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == NATIVE_TEMPLATE
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == [tokenizer.eos_id, tokenizer.token_id(END_OF_TURN), tokenizer.bos_id]


@settings(max_examples=120, deadline=None)
@given(chat=conversations(text_without(SPECIAL_TOKENS)), add_generation_prompt=st.booleans())
@example(chat=[msg("system", ""), msg("user", "Hi, Tom!"), msg("assistant", "")], add_generation_prompt=True)
@example(chat=[msg("user", " 🦙\n"), msg("assistant", "漢字 12345 "), msg("user", "<| |>")],
         add_generation_prompt=False)
def test_our_template_renders_our_ids_in_transformers(native_pair, chat, add_generation_prompt):
    fmt, hf_tok = native_pair
    assert fmt.is_native
    assert_same_as_transformers(fmt, hf_tok, chat, add_generation_prompt)


def literal_chat(specials: list[str]) -> list[dict]:
    text = " ".join(f"a{s}b {s}" for s in specials)
    return [msg("system", specials[0]), msg("user", f"Say {text} now"), msg("assistant", f"{text}{specials[-1]}")]


def test_literal_special_text_stays_text(native_pair):
    """transformers turns a literal "<|end|>" in a message into the special token unless asked not to;
    scratchlm never does, and equals transformers' sanitize_control_tokens=True."""
    fmt, hf_tok = native_pair
    chat = literal_chat(SPECIAL_TOKENS)
    ours = fmt.render(chat, add_generation_prompt=True)
    specials = set(range(len(SPECIAL_TOKENS)))
    assert sum(i in specials for i in ours.ids) == 1 + 2 * len(chat) + 1  # bos, role + end per message, prompt
    assert fmt.tokenizer.decode(ours.ids) == hf_tok.apply_chat_template(chat, add_generation_prompt=True,
                                                                         tokenize=False)
    default = hf_ids(hf_tok, chat, True)
    assert sum(i in specials for i in default) > sum(i in specials for i in ours.ids)
    if SANITIZES:
        assert ours.ids == hf_ids(hf_tok, chat, True, sanitize_control_tokens=True)


@pytest.mark.parametrize("chat, ours, theirs", [
    ([msg("user", "hi"), msg("tool", "42")], "message 1 has role 'tool'", "chat roles are system, user, assistant"),
    ([{"role": "user", "content": 3}], "content of type int", "the content of a user message must be a string"),
])
def test_both_refuse_the_same_conversations(native_pair, chat, ours, theirs):
    fmt, hf_tok = native_pair
    with pytest.raises(ScratchError, match=ours):
        fmt.render(chat)
    with pytest.raises(Exception, match=theirs):
        hf_tok.apply_chat_template(chat, tokenize=False)


# --------------------------------------------------------------------------- a Llama 3 style model comes in

BEGIN, END_TEXT, HEADER, END_HEADER, EOT, EOM = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                                 "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>")
LLAMA3_SPECIALS = [BEGIN, END_TEXT, HEADER, END_HEADER, EOT, EOM]
# Llama 3's layout, written over several lines so the Jinja settings (trim_blocks, lstrip_blocks) and loop
# controls matter: an empty system message is skipped, the content is trimmed.
LLAMA3_STYLE = """{{ bos_token }}
{% for message in messages %}
    {% if message['role'] == 'system' and not message['content'] %}{% continue %}{% endif %}
<|start_header_id|>{{ message['role'] }}<|end_header_id|>

{{ message['content'] | trim }}<|eot_id|>
{% endfor %}
{% if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{% endif %}"""


def llama3_tokenizer(adds_bos: bool) -> Tokenizer:
    """A byte-level BPE with Llama 3's special tokens after its own vocabulary (so their ids are not ours)."""
    tok = new_bpe()
    tok.train_from_iterator(sentences(300, seed=1), trainers.BpeTrainer(
        vocab_size=340, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_special_tokens(LLAMA3_SPECIALS)
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{BEGIN} $A",
                                                           special_tokens=[(BEGIN, tok.token_to_id(BEGIN))])
    return tok


def save_llama3(path: Path, adds_bos: bool = True) -> Path:
    """A tiny random Llama whose config and generation config end a sequence at three ids, its tokenizer
    naming <|eot_id|> the eos (as Llama 3 instruct's does), and the Llama 3 style template."""
    tok = llama3_tokenizer(adds_bos)
    ids = {t: tok.token_to_id(t) for t in LLAMA3_SPECIALS}
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                      max_position_embeddings=64, bos_token_id=ids[BEGIN],
                                      eos_token_id=[ids[END_TEXT], ids[EOM], ids[EOT]])
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BEGIN, eos_token=EOT,
                                         clean_up_tokenization_spaces=False,
                                         chat_template=LLAMA3_STYLE).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama3(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("llama3")
    src = save_llama3(root / "hf")
    import_hf(str(src), root / "run")
    return src, root / "run"


@pytest.fixture(scope="module")
def llama3_pair(llama3) -> tuple[ChatFormat, object]:
    src, run = llama3
    return load_chat_format(run), transformers.AutoTokenizer.from_pretrained(src)


def test_import_records_the_models_conventions(llama3):
    src, run = llama3
    hf_tok = transformers.AutoTokenizer.from_pretrained(src)
    ids = {t: hf_tok.convert_tokens_to_ids(t) for t in LLAMA3_SPECIALS}
    generation = transformers.GenerationConfig.from_pretrained(src)
    assert generation.eos_token_id == [ids[END_TEXT], ids[EOM], ids[EOT]]
    assert json.loads((run / SPECIAL_TOKENS_FILE).read_text()) == {
        "bos": BEGIN, "eos": EOT, "pad": None, "add_bos": True, "eos_ids": [ids[EOT], ids[END_TEXT], ids[EOM]]}
    fmt = load_chat_format(run)
    assert not fmt.is_native and fmt.template == LLAMA3_STYLE
    assert fmt.stop_ids == set(generation.eos_token_id)
    # Plain text starts with bos exactly when the model's own tokenizer puts it there.
    tokenizer = load_tokenizer(run)
    assert tokenizer.encode("the cat", bos=tokenizer.add_bos) == hf_tok("the cat").input_ids


def test_import_records_a_tokenizer_that_adds_no_bos(tmp_path):
    src = save_llama3(tmp_path / "hf", adds_bos=False)
    import_hf(str(src), tmp_path / "run")
    tokenizer = load_tokenizer(tmp_path / "run")
    assert tokenizer.add_bos is False
    assert tokenizer.encode("the cat", bos=tokenizer.add_bos) == transformers.AutoTokenizer.from_pretrained(src)(
        "the cat").input_ids


@settings(max_examples=120, deadline=None)
@given(chat=conversations(text_without(LLAMA3_SPECIALS)), add_generation_prompt=st.booleans())
@example(chat=[msg("system", ""), msg("user", "  hi  "), msg("assistant", "\n")], add_generation_prompt=True)
def test_imported_template_renders_as_transformers(llama3_pair, chat, add_generation_prompt):
    fmt, hf_tok = llama3_pair
    assert_same_as_transformers(fmt, hf_tok, chat, add_generation_prompt)


def test_imported_template_keeps_literal_special_text_as_text(llama3_pair):
    fmt, hf_tok = llama3_pair
    chat = literal_chat(LLAMA3_SPECIALS)
    ours = fmt.render(chat)
    assert fmt.tokenizer.decode(ours.ids) == hf_tok.apply_chat_template(chat, tokenize=False)
    specials = {hf_tok.convert_tokens_to_ids(t) for t in LLAMA3_SPECIALS}
    assert sum(i in specials for i in ours.ids) == 1 + 3 * len(chat)  # bos; header, end of header, eot each
    assert sum(i in specials for i in hf_ids(hf_tok, chat)) > sum(i in specials for i in ours.ids)
    if SANITIZES:
        assert ours.ids == hf_ids(hf_tok, chat, sanitize_control_tokens=True)


def test_imported_model_exports_its_template_and_stop_ids(llama3, tmp_path):
    src, run = llama3
    out = export_hf(run, tmp_path / "out")["out"]
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    assert theirs.chat_template == LLAMA3_STYLE
    tokenizer = load_tokenizer(run)
    generation = transformers.GenerationConfig.from_pretrained(out)
    assert generation.eos_token_id == [*tokenizer.eos_ids, tokenizer.bos_id]
    chat = [msg("system", "Be brief."), msg("user", "Hi, Tom!"), msg("assistant", "Hello.")]
    assert_same_as_transformers(load_chat_format(run), theirs, chat, add_generation_prompt=False)
    # Imported again, the export keeps the same conventions.
    import_hf(str(out), tmp_path / "again")
    assert (json.loads((tmp_path / "again" / SPECIAL_TOKENS_FILE).read_text())["eos_ids"]
            == [*tokenizer.eos_ids, tokenizer.bos_id])


def test_generation_prompt_is_what_a_model_continues(native_pair, llama3_pair):
    """prompt_ids is transformers' add_generation_prompt=True, for ours and for an imported template."""
    for fmt, hf_tok in (native_pair, llama3_pair):
        chat = [msg("user", "the cat sat on")]
        assert fmt.prompt_ids(chat) == hf_ids(hf_tok, chat, True)
    ours = native_pair[0]
    assert ours.tokenizer.decode(ours.prompt_ids(chat)) == f"{BOS}{USER}the cat sat on{END_OF_TURN}{ASSISTANT}"
