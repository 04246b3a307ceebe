"""`scratchlm chat RUN_DIR`: a conversation in the terminal, streamed token by token.

The history is a list of messages rendered by the run's chat format on every turn; the model answers
until a token that ends its turn (the format's stop ids). When the history and the room for an answer
outgrow the context, the oldest exchanges are dropped (the system message stays), with a note.

    /reset          forget the conversation (the system message stays)
    /system TEXT    set the system message (empty TEXT removes it)
    /quit           leave (so do Ctrl-D and Ctrl-C)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from scratchlm.chat import ChatFormat, Message, load_chat_format
from scratchlm.errors import ScratchError
from scratchlm.hardware import resolve_device
from scratchlm.infer.engine import Engine, SamplingParams
from scratchlm.run import load_run

MIN_ANSWER_ROOM = 64  # tokens always left for the answer when old turns are dropped


@dataclass
class Conversation:
    """The history the next answer is conditioned on."""

    system: str = ""
    turns: list[Message] = field(default_factory=list)

    def messages(self) -> list[Message]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns


class ChatSession:
    def __init__(self, run_dir: str | Path, device: str = "auto", warn: Callable[[str], None] = print) -> None:
        cfg, tokenizer, model = load_run(run_dir, resolve_device(device))
        self.fmt: ChatFormat = load_chat_format(run_dir, tokenizer)
        # One conversation: a cache of one context. Each turn's prompt repeats the history, whose blocks the
        # previous turn left in the prefix cache, so mostly the new message is prefilled.
        self.engine = Engine(model, self.fmt.stop_ids, self.fmt.tokenizer, max_running=1)
        self.context = self.engine.context_len
        self.conversation = Conversation()
        self.warn = warn
        if cfg.stage == "pretrain" and self.fmt.is_native:
            warn(f"note: {run_dir} is a base model that never saw the chat format; its replies may ramble "
                 "(fine-tune it with scratchlm sft)")

    def _fit(self, params: SamplingParams) -> list[int]:
        """The prompt of the whole history, dropping the oldest exchanges until an answer has room."""
        room = min(params.max_new_tokens, max(MIN_ANSWER_ROOM, self.context // 4))
        while True:
            ids = self.fmt.prompt_ids(self.conversation.messages(), params.tools)
            if len(ids) + room <= self.context or len(self.conversation.turns) <= 1:
                break
            drop = 2 if len(self.conversation.turns) > 2 else 1
            del self.conversation.turns[:drop]
            self.warn("note: the conversation outgrew the context; the oldest turn was dropped")
        if len(ids) >= self.context:
            self.conversation.turns.pop()
            raise ScratchError(f"the message is {len(ids)} tokens with its chat markup, but the model's context is "
                               f"{self.context}; send a shorter one")
        return ids

    def reply(self, text: str, params: SamplingParams) -> Iterator[str]:
        """Stream the answer to one user message, then keep both in the history."""
        if not text.strip():
            raise ScratchError("the message is empty; type something, or /quit")
        self.conversation.turns.append({"role": "user", "content": text})
        ids = self._fit(params)
        pieces = []
        for out in self.engine.stream(ids, params):
            pieces.append(out.text)
            yield out.text
        self.conversation.turns.append({"role": "assistant", "content": "".join(pieces)})


def run_terminal(session: ChatSession, params: SamplingParams) -> None:
    """The interactive loop: read a line, stream the answer, until /quit or end of input."""
    print("chat: /reset, /system TEXT, /quit", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        command, _, rest = line.strip().partition(" ")
        if command == "/quit":
            return
        if command == "/reset":
            session.conversation.turns.clear()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if command == "/system":
            session.conversation.system = rest.strip()
            print(f"(system message {'set' if rest.strip() else 'removed'})", file=sys.stderr)
            continue
        try:
            print("model> ", end="", flush=True)
            for piece in session.reply(line, params):
                print(piece, end="", flush=True)
            print()
        except ScratchError as exc:
            print(f"\nerror: {exc}", file=sys.stderr)
