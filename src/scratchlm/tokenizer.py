"""Byte-level BPE, trained on your own text with Hugging Face `tokenizers`.

Pre-tokenization follows GPT-4: text is first split by a regex into words, runs of 1 to 3 digits,
punctuation and whitespace, so merges never glue a number to a word or build tokens for long
numbers (which would make arithmetic harder to learn). Each piece is then mapped to bytes, so
any UTF-8 text encodes and decodes back exactly, with no unknown token.

Special tokens are reserved at fixed ids 0..N-1: bos/eos mark document boundaries, pad fills
batches, and the chat roles mark the turns of a conversation (the chat format in scratchlm.chat).

Text is data, never control: `encode` turns a literal "<|end|>" typed in a prompt, a document or a
chat message into ordinary tokens, never into the special id. Only the code that lays out a document
(bos/eos around it) or a conversation (scratchlm.chat) places special ids.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Encoding, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from scratchlm import atomic
from scratchlm.errors import ScratchError

TOKENIZER_FILE = "tokenizer.json"  # its name in a run directory and in a prepared dataset

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, USER, ASSISTANT, END_OF_TURN = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, SYSTEM, USER, ASSISTANT, END_OF_TURN]
# Which token plays bos, eos and pad. A model imported from elsewhere brings its own (e.g. Llama 3's
# <|begin_of_text|>), recorded beside its tokenizer.json in the run directory (scratchlm.run).
NATIVE_ROLES = {"bos": BOS, "eos": EOS, "pad": PAD}

# GPT-4's split pattern (cl100k), with digits in groups of at most three.
SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


class BPETokenizer:
    """A thin, typed face over a `tokenizers.Tokenizer` with the project's special tokens.

    roles maps bos/eos/pad to tokens; None means the project's own (NATIVE_ROLES, and the chat
    tokens must exist too). An imported tokenizer may have no pad token (pad: None), may not start a
    prompt with bos (add_bos False, as its own tokenizer does), and may end a sequence at several ids
    (eos_ids, e.g. Llama 3 instruct's <|eot_id|> beside its <|end_of_text|>). `conventions()` is what a
    run directory records of all this (special_tokens.json); `load` reads it back.

    The tokenizer is taken over: its special tokens no longer match inside encoded text.
    """

    def __init__(self, tokenizer: Tokenizer, roles: dict[str, str | None] | None = None, add_bos: bool = True,
                 eos_ids: Iterable[int] = ()) -> None:
        self.tok = tokenizer
        # Text never yields a special id. The flag is the object's, not tokenizer.json's: the fingerprint stays.
        self.tok.encode_special_tokens = True
        self.roles = dict(roles or NATIVE_ROLES)
        wanted = SPECIAL_TOKENS if roles is None else [t for t in self.roles.values() if t is not None]
        missing = [t for t in wanted if tokenizer.token_to_id(t) is None]
        if missing:
            hint = "train it with scratchlm prepare" if roles is None else "the run's special-token map does not fit"
            raise ScratchError(f"tokenizer lacks the special tokens {missing}; {hint}")
        self.bos_id, self.eos_id = tokenizer.token_to_id(self.roles["bos"]), tokenizer.token_to_id(self.roles["eos"])
        # Llama checkpoints ship no pad token; eos stands in, as transformers users do.
        self.pad_id = tokenizer.token_to_id(self.roles["pad"]) if self.roles.get("pad") else self.eos_id
        self.add_bos = add_bos
        self.eos_ids = tuple(dict.fromkeys([self.eos_id, *eos_ids]))  # every id that ends a sequence, eos first
        unknown = [i for i in self.eos_ids if not 0 <= i < self.vocab_size]
        if unknown:
            raise ScratchError(f"end-of-sequence ids {unknown} are not tokens of this {self.vocab_size}-token "
                               "tokenizer; fix eos_ids in the run's special_tokens.json")
        specials = sorted((t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special),
                          key=len, reverse=True)  # longest first, so a token wins over one it contains
        self.special_tokens = tuple(specials)
        self._literal_special = re.compile("(" + "|".join(map(re.escape, specials)) + ")") if specials else None

    def conventions(self) -> dict[str, object]:
        """What a run directory records in special_tokens.json to load this tokenizer as it is used."""
        return {**self.roles, "add_bos": self.add_bos, "eos_ids": list(self.eos_ids)}

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.tok.token_to_id(token)

    def _pieces(self, text: str) -> list[str]:
        """text cut around each literal special-token string, which then encodes on its own as ordinary
        tokens (as transformers' apply_chat_template(sanitize_control_tokens=True) encodes it)."""
        if self._literal_special is None or not self._literal_special.search(text):
            return [text]
        return [piece for piece in self._literal_special.split(text) if piece]

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """text as data: a literal special-token string in it becomes ordinary tokens, never the special id."""
        ids = [i for piece in self._pieces(text) for i in self.tok.encode(piece, add_special_tokens=False).ids]
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """encode for many texts at once (the tokenizers library spreads them over threads)."""
        pieces = [self._pieces(text) for text in texts]
        encoded = iter(self.tok.encode_batch([p for text_pieces in pieces for p in text_pieces],
                                             add_special_tokens=False))
        out = []
        for text_pieces in pieces:
            ids: list[int] = []
            for _ in text_pieces:
                ids += next(encoded).ids
            out.append(ids)
        return out

    def encode_offsets(self, text: str, specials: bool = False) -> tuple[list[int], list[int]]:
        """The ids of text and the character where each token starts. specials=True turns special-token
        strings into their special ids: only for text a chat template wrote, never for text a user typed."""
        if specials:
            return _ids_and_starts(self._control.encode(text, add_special_tokens=False), 0)
        ids: list[int] = []
        starts: list[int] = []
        at = 0
        for piece in self._pieces(text):
            piece_ids, piece_starts = _ids_and_starts(self.tok.encode(piece, add_special_tokens=False), at)
            ids += piece_ids
            starts += piece_starts
            at += len(piece)
        return ids, starts

    @functools.cached_property
    def _control(self) -> Tokenizer:
        """A copy whose special tokens match inside text (the chat renderer's, for a template's output)."""
        return Tokenizer.from_str(self.to_json())

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)

    def to_json(self) -> str:
        return self.tok.to_str()

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, self.to_json())

    def fingerprint(self) -> str:
        """A hash of the whole tokenizer: shards and checkpoints record it to refuse a mismatch."""
        canonical = json.dumps(json.loads(self.to_json()), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str, roles: dict[str, str | None] | None = None) -> BPETokenizer:
        return cls(Tokenizer.from_str(text), roles)

    @classmethod
    def load(cls, path: str | Path, conventions: dict[str, Any] | None = None) -> BPETokenizer:
        """Read a tokenizer.json; conventions is what `conventions()` wrote (None: ours). Files written before
        add_bos and eos_ids were recorded hold the roles only, and load as they always did."""
        path = Path(path)
        if not path.is_file():
            raise ScratchError(f"tokenizer file {path} does not exist")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise ScratchError(f"{path} is not a tokenizer.json: {str(exc).splitlines()[0]}") from None
        if conventions is None:
            return cls(tok)
        roles = {role: conventions.get(role) for role in NATIVE_ROLES}
        return cls(tok, roles, add_bos=bool(conventions.get("add_bos", True)),
                   eos_ids=[int(i) for i in conventions.get("eos_ids", [])])


def _ids_and_starts(encoding: Encoding, at: int) -> tuple[list[int], list[int]]:
    return encoding.ids, [at + start for start, _ in encoding.offsets]


def new_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterator[str] | Iterable[str], vocab_size: int) -> BPETokenizer:
    """Learn merges until the vocabulary (256 bytes + merges + specials) reaches vocab_size."""
    if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
        raise ScratchError(f"vocab_size {vocab_size} is too small: byte-level BPE needs at least "
                           f"{256 + len(SPECIAL_TOKENS) + 1}")
    tok = new_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, so nothing is ever unknown
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tok)


def bytes_per_token(tokenizer: BPETokenizer, texts: Iterable[str]) -> float:
    """Compression on held-out text: UTF-8 bytes divided by tokens (higher packs more text per step)."""
    n_bytes = n_tokens = 0
    for text in texts:
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(tokenizer.encode(text))
    return n_bytes / max(n_tokens, 1)
