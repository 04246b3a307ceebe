"""Where preference pairs come from. One interface: `load_preferences(source, split)`.

    embedded           the corpus's pairs (scratchlm.data.corpus.preferences): a right worked solution
                       against a slipped one, the story asked for against one that drops what was asked,
                       a reply that ends its turn against one that rambles
    PATH | DIR | GLOB  local .jsonl, .json or .parquet files, one pair per record
    hf:NAME[:CONFIG]   a Hugging Face hub dataset, streamed (needs a network): UltraFeedback binarized
                       (--data.hub_split train_prefs), Anthropic/hh-rlhf, or any dataset in these formats

A record holds a chosen and a rejected reply, in any of the formats preference datasets use:

    {"prompt": ..., "chosen": ..., "rejected": ...}  strings (the prompt a user message, the replies the
        assistant's) or lists of messages; chosen and rejected may repeat the prompt at their start, as
        UltraFeedback binarized's whole conversations do. An optional "system" string opens the prompt.
    {"chosen": [messages], "rejected": [messages]}  no prompt: it is the beginning the two share
    {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": "..."}  Anthropic HH transcripts (or an HH
        transcript as the prompt and the replies as strings)

and an optional "margin" (a number: how much better chosen is, for the reward model's loss). A pair is
a prompt (the conversation so far) and two replies (the assistant's messages after it).

A bad record is skipped and counted by reason in one summary line (in strict mode the first one stops the
run, named by file and record number): an empty chosen or rejected, identical chosen and rejected, no
prompt, replies that differ before the assistant's turn, and what a conversation can get wrong (an unknown
role, content that is not text, malformed JSON).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from scratchlm.data.chat_data import BadRecord as BadConversation
from scratchlm.data.chat_data import Conversation, Skips, to_conversation
from scratchlm.data.records import BadRecord, records
from scratchlm.errors import ScratchError

__all__ = ["PairSkips", "PreferencePair", "load_preferences", "to_pair"]

# The embedded corpus has a held-out split besides, for measuring what training did; files have two.
EMBEDDED_SPLITS = ("train", "validation", "heldout")
FILE_SPLITS = ("train", "validation")
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ?")


@dataclass(frozen=True)
class PreferencePair:
    """A prompt and two replies to it, the chosen one better."""

    prompt: Conversation  # the conversation so far
    chosen: Conversation  # the better reply: the assistant's messages after the prompt
    rejected: Conversation
    margin: float | None = None  # how much better, when the record says (the reward model's margin)
    kind: str = field(default="", compare=False)  # the embedded corpus's kind of pair (math_slip, ramble, ...)


class PairSkips(Skips):
    """Skips, counted and summarised as preference pairs."""

    def summary(self, total: int | None = None) -> str | None:
        if not self.reasons:
            return None
        total = self.records if total is None else total
        counts = ", ".join(f"{count:,} {reason}" for reason, count in self.reasons.most_common())
        return f"skipped {self.skipped:,} of {total:,} preference pairs: {counts}"


def load_preferences(source: str, split: str, *, n_embedded: int = 10_000, strict: bool = False, seed: int = 0,
                     hub_split: str = "train", max_records: int = 0, val_fraction: float = 0.01,
                     skips: PairSkips | None = None) -> list[PreferencePair]:
    """The pairs of one split of a source.

    The embedded corpus has its own splits: ``n_embedded`` train pairs, a fiftieth of that (at least 200)
    for validation and as many held out. Files and hub datasets hold out every k-th record for validation
    (k = 1 / val_fraction), counting every record, good or bad, so the split never depends on what is
    skipped. ``max_records`` stops reading after that many records (0: all). Bad records of the split are
    counted in ``skips`` (a new ``PairSkips(strict)`` when none is given).
    """
    skips = PairSkips(strict) if skips is None else skips
    if source == "embedded":
        if split not in EMBEDDED_SPLITS:
            raise ValueError(f"split must be one of {EMBEDDED_SPLITS}, got {split!r}")
        from scratchlm.data import corpus

        n = n_embedded if split == "train" else max(200, n_embedded // 50)
        return _pairs(corpus.preference_pairs(split, n, seed=seed), "the embedded corpus", skips)
    if split not in FILE_SPLITS:
        raise ValueError(f"split must be one of {FILE_SPLITS}, got {split!r}")
    every = max(2, round(1 / val_fraction)) if val_fraction > 0 else 0
    found = []
    for i, (where, record_no, record) in enumerate(records(source, hub_split, _check_fields)):
        if max_records and i >= max_records:
            break
        if (every > 0 and i % every == every - 1) != (split == "validation"):
            continue
        skips.records += 1
        try:
            found.append(to_pair(record))
        except (BadRecord, BadConversation) as bad:
            skips.add(str(bad), record_no, where)
    if not found:
        summary = skips.summary()
        detail = f" ({summary})" if summary else ""
        if split == "train":
            raise ScratchError(f"data source {source} has no usable preference pairs{detail}; see scratchlm.data."
                               "preference_data for the record formats it reads")
        raise ScratchError(f"data source {source} leaves no preference pairs for validation{detail} (val_fraction "
                           f"{val_fraction}); add pairs or set --data.val_fraction between 0.01 and 0.5")
    return found


def _pairs(items: Any, where: str, skips: PairSkips) -> list[PreferencePair]:
    found = []
    for number, record in enumerate(items, 1):
        skips.records += 1
        try:
            found.append(to_pair(record))
        except (BadRecord, BadConversation) as bad:
            skips.add(str(bad), number, where)
    return found


def to_pair(record: object) -> PreferencePair:
    """The record as a prompt and two replies; raises BadRecord saying what is wrong."""
    if isinstance(record, BadRecord):  # a line that did not even parse
        raise record
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    if record.get("chosen") is None or record.get("rejected") is None:
        raise BadRecord("no chosen or rejected")
    chosen, rejected = _side(record, "chosen"), _side(record, "rejected")
    if _blank(chosen) or _blank(rejected):
        raise BadRecord("empty chosen or rejected")
    chosen, rejected = to_conversation({"messages": chosen}), to_conversation({"messages": rejected})
    if chosen == rejected:
        raise BadRecord("identical chosen and rejected")
    shared = 0  # the messages both begin with are the prompt
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    prompt, chosen_reply, rejected_reply = chosen[:shared], chosen[shared:], rejected[shared:]
    if not chosen_reply or not rejected_reply:  # one goes on where the other stops: nothing to compare
        raise BadRecord("empty chosen or rejected")
    if not prompt:
        raise BadRecord("no prompt (chosen and rejected share no beginning)")
    if chosen_reply[0]["role"] != "assistant" or rejected_reply[0]["role"] != "assistant":
        raise BadRecord("chosen and rejected differ before the assistant's reply")
    margin = record.get("margin")
    if margin is not None and (isinstance(margin, bool) or not isinstance(margin, int | float)):
        raise BadRecord("margin is not a number")
    return PreferencePair(prompt, chosen_reply, rejected_reply, None if margin is None else float(margin),
                          str(record.get("kind", "")))


def _side(record: dict, name: str) -> list:
    """One side (chosen or rejected) as the whole conversation, prompt included: unchecked messages."""
    value, prompt = record[name], record.get("prompt")
    if isinstance(value, str):
        return _transcript(value, name) if prompt is None else [*_prompt(record), _reply(value)]
    if isinstance(value, list):
        return value if prompt is None or _starts_with(value, prompt) else [*_prompt(record), *value]
    raise BadRecord(f"{name} is neither text nor a list of messages")


def _prompt(record: dict) -> list:
    prompt, system = record["prompt"], record.get("system")
    opening = [{"role": "system", "content": system}] if isinstance(system, str) else []
    if isinstance(prompt, str) and _HH_TURN.match(prompt):  # an HH transcript up to "Assistant:"
        turns = _transcript(prompt, "prompt")
        return [*opening, *(turns[:-1] if turns[-1]["role"] == "assistant" and not turns[-1]["content"] else turns)]
    if isinstance(prompt, str):
        return [*opening, {"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        return [*opening, *prompt]
    raise BadRecord("prompt is neither text nor a list of messages")


def _reply(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _starts_with(messages: list, prompt: str | list) -> bool:
    """Whether a whole conversation already holds the prompt at its start (UltraFeedback binarized), comparing
    roles and contents only (parquet gives the messages of each column the keys of all of them)."""
    def said(items: list) -> list:
        return [(m.get("role", m.get("from")), m.get("content", m.get("value"))) if isinstance(m, dict) else m
                for m in items]

    prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return isinstance(prompt, list) and said(messages[:len(prompt)]) == said(prompt)


def _transcript(text: str, name: str) -> list:
    """An Anthropic HH transcript, "\\n\\nHuman: ...\\n\\nAssistant: ...", as messages."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise BadRecord(f"no prompt ({name} is plain text, not a Human/Assistant transcript)")
    return [{"role": "user" if who == "Human" else "assistant", "content": content.strip()}
            for who, content in zip(parts[1::2], parts[2::2], strict=True)]


def _blank(messages: list) -> bool:
    """Whether a side ends in an empty reply (or has no message at all)."""
    if not messages:
        return True
    last = messages[-1]
    content = last.get("content", last.get("value")) if isinstance(last, dict) else None
    return isinstance(content, str) and not content.strip()


def _check_fields(first: dict, where: str) -> None:
    """A file whose first record lacks chosen or rejected is the wrong kind of file."""
    if "chosen" not in first or "rejected" not in first:
        raise ScratchError(f"{where} has no chosen and rejected fields (its fields are {', '.join(first) or 'none'}); "
                           "see scratchlm.data.preference_data for the record formats")
