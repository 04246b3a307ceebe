"""The BPE tokenizer: lossless on any text, fixed special tokens, GPT-4-style digit groups, compression,
a fingerprint that identifies it, and clear errors for bad files and bad sizes."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from scratchlm.data import corpus
from scratchlm.errors import ScratchError
from scratchlm.tokenizer import SPECIAL_TOKENS, BPETokenizer, bytes_per_token, train_tokenizer

TRAIN_DOCS = 1500
VOCAB = 1000


@pytest.fixture(scope="module")
def train_texts() -> list[str]:
    return list(corpus.documents("train", TRAIN_DOCS, seed=0))


@pytest.fixture(scope="module")
def tok(train_texts) -> BPETokenizer:
    return train_tokenizer(train_texts, VOCAB)


@pytest.fixture(scope="module")
def heldout_texts() -> list[str]:
    return list(corpus.documents("heldout", 150, seed=0))


# --------------------------------------------------------------------------------------------------
# Lossless round trip
# --------------------------------------------------------------------------------------------------

NASTY_PIECES = SPECIAL_TOKENS + ["<|", "|>", "<|bos", "bos|>", "🦙", "👩‍👩‍👧", "漢字", "かな", "\u200b", "\ufeff",
                                 "\x00", "\x1b[0m", "\r\n", "\r", "\t\t", "   ", "\n\n\n", "12345678", "3.14",
                                 "'s", "'LL", "é", "e\u0301", "\U0010ffff", "Ω", "ﬁ"]
mixed_text = st.lists(st.one_of(st.sampled_from(NASTY_PIECES), st.text(max_size=8)), max_size=12).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), mixed_text))
@example(text="")
@example(text="The cat 🐱 sat on 日本語のテキスト\x00\x07\x1f with   \t\t\n\n\r\n  spaces   ")
@example(text="<|bos|>hello<|eos|><|pad|><|system|><|user|><|assistant|><|end|>")
@example(text="a<|bos|>b <|eos|> c<|bos|")
@example(text=" " * 100)
@example(text="1234567890 99999 007")
def test_round_trip_is_lossless(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_round_trip_with_bos_eos(tok, train_texts):
    text = train_texts[0]
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[1:-1] == tok.encode(text)
    assert tok.decode(ids) == SPECIAL_TOKENS[0] + text + SPECIAL_TOKENS[1]
    assert tok.decode(ids, skip_special=True) == text


def test_encode_batch_matches_encode(tok, train_texts):
    texts = train_texts[:20] + ["", "🦙 <|user|> 12345"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


# --------------------------------------------------------------------------------------------------
# Special tokens
# --------------------------------------------------------------------------------------------------


def test_special_tokens_at_fixed_ids(tok):
    assert len(set(SPECIAL_TOKENS)) == len(SPECIAL_TOKENS)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_id(token) == i
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (tok.token_id("<|bos|>"), tok.token_id("<|eos|>"),
                                                   tok.token_id("<|pad|>"))
    assert tok.vocab_size == VOCAB


def test_literal_special_text_encodes_as_ordinary_tokens(tok):
    """Text is data: typing "<|end|>" never produces the special id, and the text comes back intact."""
    special_ids = set(range(len(SPECIAL_TOKENS)))
    for token in SPECIAL_TOKENS:
        assert tok.tok.token_to_id(token) in special_ids  # the token exists; encode just never produces it
        for text in (token, f"hello{token}world", f"Say {token} now {token}{token}"):
            ids = tok.encode(text)
            assert not set(ids) & special_ids, (text, ids)
            assert tok.decode(ids) == text
    # A literal special-token string is encoded on its own, apart from the text around it: a tokenizer that
    # learned " <|" as one token does not use it across the edge of "<|end|>".
    spaced = train_tokenizer(["say <| and |> or <|x|> now"] * 20, 300)
    whole = Tokenizer.from_str(spaced.to_json())
    whole.encode_special_tokens = True
    text = "Say <|end|> now"
    assert spaced.encode(text) == spaced.encode("Say ") + spaced.encode("<|end|>") + spaced.encode(" now")
    assert spaced.encode(text) != whole.encode(text, add_special_tokens=False).ids
    assert tok.encode("<|user|>", bos=True, eos=True)[1:-1] == tok.encode("<|user|>")


def test_encode_offsets_locate_each_token(tok):
    text = "The cat 🦙 sat <|end|> on 12345 mats."
    ids, starts = tok.encode_offsets(text)
    assert ids == tok.encode(text)
    assert starts == sorted(starts) and starts[0] == 0
    # Each token decodes to the text from its start to the next token's start (a llama's bytes share one).
    bounds = sorted(set(starts)) + [len(text)]
    pieces = [tok.decode([i for i, s in zip(ids, starts, strict=True) if s == a]) for a in bounds[:-1]]
    assert pieces == [text[a:b] for a, b in itertools.pairwise(bounds)]
    # specials=True is for text a template wrote: there the special-token strings are the special ids.
    control_ids, control_starts = tok.encode_offsets("<|user|>hi<|end|>", specials=True)
    assert control_ids == [tok.token_id("<|user|>"), *tok.encode("hi"), tok.token_id("<|end|>")]
    assert control_starts[0] == 0 and control_starts[-1] == len("<|user|>hi")


def test_special_ids_are_the_same_for_any_training_text():
    a = train_tokenizer(["aaaa bbbb cccc"] * 10, 300)
    b = train_tokenizer(["zzz 123 yyy"] * 10, 280)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert a.token_id(token) == b.token_id(token) == i


# --------------------------------------------------------------------------------------------------
# Digits: groups of at most three
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["1234567", "9876543210", "100000", "3333333"])
def test_digit_runs_split_in_groups_of_at_most_three(tok, number):
    pieces = [tok.decode([i]) for i in tok.encode(number)]
    assert "".join(pieces) == number
    assert all(piece.isdigit() and 1 <= len(piece) <= 3 for piece in pieces), pieces
    # No token crosses a group boundary: the groups are number[0:3], number[3:6], ...
    ends, pos = set(), 0
    for piece in pieces:
        pos += len(piece)
        ends.add(pos)
    group_ends = set(range(3, len(number), 3)) | {len(number)}
    assert group_ends <= ends, pieces


def test_training_text_had_long_numbers_to_merge(tok, train_texts):
    """The digit test above means something only if BPE learned multi-digit tokens at all."""
    multi = [t for t in (tok.decode([i]) for i in range(tok.vocab_size)) if t.isdigit() and len(t) > 1]
    assert multi, "no multi-digit tokens learned; the digit-group test would pass trivially"
    assert max(len(t) for t in multi) <= 3


def test_digits_are_not_glued_to_words(tok):
    for text in ["abc123", "x2", "year2024"]:
        pieces = [tok.decode([i]) for i in tok.encode(text)]
        assert not any(any(c.isdigit() for c in p) and any(c.isalpha() for c in p) for p in pieces), pieces


# --------------------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------------------


def test_bytes_per_token_is_the_ratio(tok, heldout_texts):
    texts = heldout_texts[:10]
    expected = sum(len(t.encode("utf-8")) for t in texts) / sum(len(tok.encode(t)) for t in texts)
    assert bytes_per_token(tok, texts) == pytest.approx(expected)
    assert bytes_per_token(tok, []) == 0.0


def test_bytes_per_token_reports_compression_on_heldout_text(tok, train_texts, heldout_texts):
    assert not set(heldout_texts) & set(train_texts)
    bpt = bytes_per_token(tok, heldout_texts)
    assert bpt > 2.5
    # More merges compress better: a tokenizer with almost no merges is close to one byte per token.
    tiny = train_tokenizer(train_texts[:200], 300)
    tiny_bpt = bytes_per_token(tiny, heldout_texts)
    assert 1.0 < tiny_bpt < bpt


# --------------------------------------------------------------------------------------------------
# Fingerprint, save and load
# --------------------------------------------------------------------------------------------------


def test_fingerprint_stable_across_save_and_load(tok, tmp_path, train_texts):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.fingerprint() == tok.fingerprint()
    assert BPETokenizer.from_json(tok.to_json()).fingerprint() == tok.fingerprint()
    sample = train_texts[1] + " 🦙 <|user|>"
    assert loaded.encode(sample) == tok.encode(sample)
    # Training is deterministic: the same text and size give the same tokenizer.
    assert train_tokenizer(train_texts, VOCAB).fingerprint() == tok.fingerprint()


def test_taking_over_a_tokenizer_keeps_its_json_and_fingerprint(tok):
    """Turning off special-token matching in text is a flag of the object, not of tokenizer.json, so
    prepared datasets and checkpoints that recorded the fingerprint still match."""
    text = tok.to_json()
    fresh = Tokenizer.from_str(text)
    assert fresh.encode("<|end|>", add_special_tokens=False).ids == [tok.token_id("<|end|>")]
    taken = BPETokenizer(fresh)
    assert taken.to_json() == text and taken.fingerprint() == tok.fingerprint()
    expected = hashlib.sha256(json.dumps(json.loads(text), sort_keys=True).encode()).hexdigest()[:16]
    assert tok.fingerprint() == expected


def test_conventions_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    roles = {"bos": "<|user|>", "eos": "<|system|>", "pad": None}  # any tokens may play the roles
    imported = BPETokenizer.load(path, roles | {"add_bos": False, "eos_ids": [5, 6, 3]})
    assert (imported.bos_id, imported.eos_id, imported.pad_id) == (4, 3, 3)
    assert imported.add_bos is False and imported.eos_ids == (3, 5, 6)  # the eos first, each id once
    again = BPETokenizer.load(path, imported.conventions())
    assert (again.roles, again.add_bos, again.eos_ids) == (imported.roles, False, (3, 5, 6))
    # A special_tokens.json written before add_bos and eos_ids were recorded holds the roles only.
    old = BPETokenizer.load(path, roles)
    assert old.add_bos is True and old.eos_ids == (3,)
    assert BPETokenizer.load(path).conventions() == {"bos": "<|bos|>", "eos": "<|eos|>", "pad": "<|pad|>",
                                                     "add_bos": True, "eos_ids": [1]}


def test_unknown_eos_id_is_refused(tok):
    with pytest.raises(ScratchError, match=r"end-of-sequence ids \[5000\] are not tokens") as err:
        BPETokenizer(Tokenizer.from_str(tok.to_json()), eos_ids=[6, 5000])
    assert "special_tokens.json" in str(err.value)


def test_fingerprint_differs_for_a_different_tokenizer(tok, train_texts):
    assert train_tokenizer(train_texts, VOCAB - 100).fingerprint() != tok.fingerprint()
    assert train_tokenizer(train_texts[::-1][:300], VOCAB).fingerprint() != tok.fingerprint()


def test_load_missing_file_raises(tmp_path):
    missing = tmp_path / "nope" / "tokenizer.json"
    with pytest.raises(ScratchError, match="does not exist") as err:
        BPETokenizer.load(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(ScratchError):
        BPETokenizer.load(tmp_path)  # a directory is not a tokenizer file


@pytest.mark.parametrize("content", ["this is not json", "{}", '{"model": 3}', ""])
def test_load_malformed_file_raises(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(ScratchError, match="not a tokenizer") as err:
        BPETokenizer.load(path)
    assert str(path) in str(err.value)


def test_load_tokenizer_without_special_tokens_raises(tmp_path):
    plain = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
    path = tmp_path / "tokenizer.json"
    path.write_text(plain.to_str())
    json.loads(path.read_text())  # a valid tokenizer.json, just not one of ours
    with pytest.raises(ScratchError, match="special tokens"):
        BPETokenizer.load(path)


def test_too_small_vocab_is_refused():
    minimum = 256 + len(SPECIAL_TOKENS) + 1
    with pytest.raises(ScratchError, match="too small") as err:
        train_tokenizer(["hello world"] * 5, minimum - 1)
    assert str(minimum) in str(err.value)
    with pytest.raises(ScratchError):
        train_tokenizer(["hello world"] * 5, 10)
    assert train_tokenizer(["hello world"] * 5, minimum).vocab_size <= minimum
