"""Where conversations for supervised fine-tuning come from. One interface: `load_conversations(source, split)`.

    embedded           the corpus's conversations (scratchlm.data.corpus): math solved step by step, stories
                       written to a request, follow-up questions about an earlier turn
    PATH | DIR | GLOB  local .jsonl, .json or .parquet files, one conversation per record
    hf:NAME[:CONFIG]   a Hugging Face hub chat dataset, streamed (needs a network)

A record may be in any of the formats chat datasets already use:

    {"messages": [{"role": "user", "content": ...}, ...]}       OpenAI / Hugging Face chat (smoltalk;
                                                                ultrachat_200k adds prompt and prompt_id)
    {"conversations": [{"from": "human", "value": ...}, ...]}   ShareGPT (human, gpt, system)
    {"prompt": ..., "response": ...} or {"prompt": ..., "completion": ...}, with an optional "system":
                                                                strings, or lists of messages (TRL's
                                                                conversational prompt-completion format)

Roles are system, user and assistant. A bad record (malformed JSON, an unknown role, content that is empty
or not text, no assistant turn) is skipped and counted by reason in a `Skips`, which writes one summary
line; in strict mode the first one stops the run, named by its file and record number. Trailing turns
after the last assistant reply are dropped (nothing in them is trained), and so is an empty system message.

Parquet files and hub datasets stream through `datasets`, so the tests that read local parquet files run
the hub path offline. JSON lines are read line by line here instead: a malformed line can then be skipped
and named by its line number, where `datasets` would give up on the whole file.
"""

from __future__ import annotations

from collections import Counter

from scratchlm.data.corpus.dialogue import Conversation, Message
from scratchlm.data.records import BadRecord, records
from scratchlm.errors import ScratchError

__all__ = ["Conversation", "Message", "Skips", "load_conversations", "to_conversation"]

SPLITS = ("train", "validation")
ROLES = ("system", "user", "assistant")
# ShareGPT names its speakers; some exports already use the chat roles there.
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
_FORMAT_FIELDS = ("messages", "conversations", "prompt")


class Skips:
    """The records left out of a data source, counted by reason for one summary line.

    In strict mode `add` raises instead, naming the first bad record. The SFT stage adds its own reason
    ("longer than the context") to the same Skips, so that one line reports every record left out.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.records = 0  # records read: what a summary counts the skipped ones against
        self.reasons: Counter[str] = Counter()

    def add(self, reason: str, record_no: int, where: str) -> None:
        if self.strict:
            raise ScratchError(f"{where}, record {record_no}: {reason}; fix or remove the record, or leave out "
                               "--data.strict to skip bad records and count them")
        self.reasons[reason] += 1

    @property
    def skipped(self) -> int:
        return sum(self.reasons.values())

    def summary(self, total: int | None = None) -> str | None:
        """One line, e.g. "skipped 3 of 1,000 conversations: 2 unknown role 'bot', 1 no assistant turn";
        None when nothing was skipped. ``total`` defaults to the records read."""
        if not self.reasons:
            return None
        total = self.records if total is None else total
        counts = ", ".join(f"{count:,} {reason}" for reason, count in self.reasons.most_common())
        return f"skipped {self.skipped:,} of {total:,} conversations: {counts}"


def load_conversations(source: str, split: str, *, n_embedded: int = 10_000, strict: bool = False, seed: int = 0,
                       hub_split: str = "train", max_records: int = 0, val_fraction: float = 0.01,
                       skips: Skips | None = None) -> list[Conversation]:
    """The conversations of one split ("train" or "validation") of a source.

    The embedded corpus has its own splits: ``n_embedded`` train conversations, and a fiftieth of that
    (at least 200) for validation. Files and hub datasets hold out every k-th record for validation
    (k = 1 / val_fraction), counting every record, good or bad, so the split never depends on what is
    skipped. ``max_records`` stops reading after that many records (0: all). Bad records of the split
    are counted in ``skips`` (a new ``Skips(strict)`` when none is given; a given one keeps its own mode).
    Record numbers count from 1 in each file; in a .jsonl file they are line numbers.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    skips = Skips(strict) if skips is None else skips
    if source == "embedded":
        from scratchlm.data import corpus

        n = n_embedded if split == "train" else max(200, n_embedded // 50)
        found = list(corpus.conversations(split, n, seed=seed))
        skips.records += len(found)
        return found
    every = max(2, round(1 / val_fraction)) if val_fraction > 0 else 0
    found = []
    for i, (where, record_no, record) in enumerate(records(source, hub_split, _check_fields)):
        if max_records and i >= max_records:
            break
        if (every > 0 and i % every == every - 1) != (split == "validation"):
            continue
        skips.records += 1
        try:
            found.append(to_conversation(record))
        except BadRecord as bad:
            skips.add(str(bad), record_no, where)
    if not found:
        summary = skips.summary()
        detail = f" ({summary})" if summary else ""
        if split == "train":
            raise ScratchError(f"data source {source} has no usable conversations{detail}; see scratchlm.data."
                               "chat_data for the record formats it reads")
        raise ScratchError(f"data source {source} leaves no conversations for validation{detail} (val_fraction "
                           f"{val_fraction}); add conversations or set --data.val_fraction between 0.01 and 0.5")
    return found


def to_conversation(record: object) -> Conversation:
    """The record as a list of {"role", "content"} messages; raises BadRecord saying what is wrong."""
    if isinstance(record, BadRecord):  # a line that did not even parse
        raise record
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    if record.get("messages") is not None:
        messages = _messages(record["messages"])
    elif record.get("conversations") is not None:
        messages = _messages(record["conversations"])
    elif record.get("prompt") is not None:
        messages = _prompt_completion(record)
    else:
        raise BadRecord("no messages, conversations or prompt field")
    # A system message with nothing in it says nothing; drop it rather than the conversation.
    messages = [m for m in messages if m["role"] != "system" or m["content"].strip()]
    for message in messages:
        if not message["content"].strip():
            raise BadRecord("empty content")
    last_reply = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last_reply < 0:
        raise BadRecord("no assistant turn")
    return messages[: last_reply + 1]


def _prompt_completion(record: dict) -> Conversation:
    answer_field = next((field for field in ("response", "completion") if record.get(field) is not None), None)
    if answer_field is None:
        raise BadRecord("no response or completion")
    system = record.get("system")
    messages = [{"role": "system", "content": system}] if isinstance(system, str) else []
    for field, role in (("prompt", "user"), (answer_field, "assistant")):
        part = record[field]
        if isinstance(part, str):
            messages.append({"role": role, "content": part})
        elif isinstance(part, list):
            messages += _messages(part)
        else:
            raise BadRecord(f"{field} is neither text nor a list of messages")
    return messages


def _messages(items: object) -> Conversation:
    """Checks a list of messages in either spelling ({role, content} or ShareGPT's {from, value})."""
    if not isinstance(items, list):
        raise BadRecord("messages are not a list")
    messages = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRecord("a message is not an object")
        if item.get("role") is not None:
            role, content = item["role"], item.get("content")
        else:
            speaker = item.get("from")
            role = _SHAREGPT_ROLES.get(speaker, speaker) if isinstance(speaker, str) else speaker
            content = item.get("value")
        if role not in ROLES:
            raise BadRecord(f"unknown role {role!r}")
        if not isinstance(content, str):
            raise BadRecord("content is not text")
        messages.append({"role": role, "content": content})
    return messages


def _check_fields(first: dict, where: str) -> None:
    """A file whose first record has none of the conversation fields is the wrong kind of file."""
    if not any(field in first for field in _FORMAT_FIELDS):
        raise ScratchError(f"{where} has none of the fields messages, conversations or prompt (its fields are "
                           f"{', '.join(first) or 'none'}); see scratchlm.data.chat_data for the record formats")
