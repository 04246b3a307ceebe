"""Byte-level BPE, trained on your own text with Hugging Face `tokenizers`.

Pre-tokenization follows GPT-4: text is first split by a regex into words, runs of 1 to 3 digits,
punctuation and whitespace, so merges never glue a number to a word or build tokens for long
numbers (which would make arithmetic harder to learn). Each piece is then mapped to bytes, so
any UTF-8 text encodes and decodes back exactly, with no unknown token.

Special tokens are reserved at fixed ids 0..N-1: bos/eos mark document boundaries, pad fills
batches, and the chat roles mark the turns of a conversation (the chat format in interop/hf.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

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
    tokens must exist too). An imported tokenizer may have no pad token (pad: None).
    """

    def __init__(self, tokenizer: Tokenizer, roles: dict[str, str | None] | None = None) -> None:
        self.tok = tokenizer
        self.roles = dict(roles or NATIVE_ROLES)
        wanted = SPECIAL_TOKENS if roles is None else [t for t in self.roles.values() if t is not None]
        missing = [t for t in wanted if tokenizer.token_to_id(t) is None]
        if missing:
            hint = "train it with scratchlm prepare" if roles is None else "the run's special-token map does not fit"
            raise ScratchError(f"tokenizer lacks the special tokens {missing}; {hint}")
        self.bos_id, self.eos_id = tokenizer.token_to_id(self.roles["bos"]), tokenizer.token_to_id(self.roles["eos"])
        # Llama checkpoints ship no pad token; eos stands in, as transformers users do.
        self.pad_id = tokenizer.token_to_id(self.roles["pad"]) if self.roles.get("pad") else self.eos_id

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def token_id(self, token: str) -> int:
        return self.tok.token_to_id(token)

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=False).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

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
    def load(cls, path: str | Path, roles: dict[str, str | None] | None = None) -> BPETokenizer:
        path = Path(path)
        if not path.is_file():
            raise ScratchError(f"tokenizer file {path} does not exist")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise ScratchError(f"{path} is not a tokenizer.json: {str(exc).splitlines()[0]}") from None
        return cls(tok, roles)


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
