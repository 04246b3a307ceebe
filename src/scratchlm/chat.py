"""The chat format: the one place that turns a conversation into token ids and a mask of trained tokens.

SFT, `chat`, the server, evaluation and RL all render conversations here. A conversation is a list of
messages, {"role": "system" | "user" | "assistant", "content": str}. Rendering gives the ids and, for
each id, whether the model is trained to produce it: the content of every assistant message and the
token that ends its turn, so the model learns to answer and to stop.

Our format (NativeChat) is a table of role tokens:

    <|bos|><|system|>You are terse.<|end|><|user|>Hi!<|end|><|assistant|>Hello.<|end|>
                                                                        ~~~~~~~~~~~~~ trained

A conversation starts with <|bos|>; each message is its role token, its content verbatim (nothing
added), then <|end|>. The generation prompt is <|assistant|>. A system message is optional and may
come anywhere. NATIVE_TEMPLATE is the same table written as the Jinja chat template that export-hf
puts in tokenizer_config.json, so transformers' apply_chat_template gives the same ids (the tests
prove it).

A model imported from Hugging Face keeps its own chat template (TemplateChat): it is rendered with
Jinja the way transformers renders it, and the assistant's tokens are found by rendering prefixes of
the conversation (an assistant turn is the text that messages[:i+1] adds to messages[:i] followed by
the generation prompt) and mapping characters to tokens.

Text that a user types is data, never control: a literal "<|end|>" in a message is encoded as ordinary
tokens, never as the special token. In a template's output only the special tokens the template wrote
are special ids; transformers does the same with apply_chat_template(..., sanitize_control_tokens=True),
and without that option turns the literal text into the special token.

Tool use (render(..., tools=("calculator",))): an assistant message is encoded in the pieces that the
engine produces when it runs the tools (infer/tools.py): the text the model writes up to a calculator
call's "=", the result and ">>" that the calculator feeds, the text after it, each encoded on its own, so
training sees the ids that generation sees. What a tool feeds is never trained:

    <|assistant|>5 + 7 = <<5+7=12>>12 apples.<|end|>
                 ~~~~~~~~~~~~~~    ~~~~~~~~~~~~~~~~~ trained; "12>>" fed by the calculator
"""

from __future__ import annotations

import bisect
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from scratchlm.errors import ScratchError
from scratchlm.infer.tools import segments
from scratchlm.run import load_tokenizer
from scratchlm.tokenizer import ASSISTANT, BOS, END_OF_TURN, EOS, SYSTEM, USER, BPETokenizer

Message = dict[str, str]

CHAT_TEMPLATE_FILE = "chat_template.jinja"  # in a run directory: an imported model's own chat template
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}  # our format, in one table
TRAINED_ROLE = "assistant"
_NATIVE_TOKENS = (BOS, EOS, END_OF_TURN, *ROLE_TOKENS.values())


def _native_template() -> str:
    """NativeChat.render written in Jinja, from the same tables, for transformers' apply_chat_template."""
    branches = "{% el".join(f"if message['role'] == '{role}' %}}{token}" for role, token in ROLE_TOKENS.items())
    roles = ", ".join(ROLE_TOKENS)
    return (
        f"{BOS}{{% for message in messages %}}"
        "{% if message['content'] is not string %}"
        "{{ raise_exception('the content of a ' + message['role'] + ' message must be a string') }}{% endif %}"
        f"{{% {branches}{{% else %}}{{{{ raise_exception('chat roles are {roles}, not ' + message['role']) }}}}"
        f"{{% endif %}}{{{{ message['content'] }}}}{END_OF_TURN}{{% endfor %}}"
        f"{{% if add_generation_prompt %}}{ROLE_TOKENS[TRAINED_ROLE]}{{% endif %}}"
    )


NATIVE_TEMPLATE = _native_template()


def validate_messages(messages: Any, roles: Collection[str] | None = tuple(ROLE_TOKENS)) -> None:
    """Refuse, in one line, a conversation that is not a non-empty list of {role, content} messages with
    string content and a known role (roles None: any string, for a template that decides itself)."""
    if not isinstance(messages, list) or not messages:
        raise ScratchError("a conversation must be a non-empty list of messages such as "
                           '{"role": "user", "content": "Hi!"}')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ScratchError(f"message {i} must be an object with a role and a content, got {message!r:.80}")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or (roles is not None and role not in roles):
            known = f"one of {', '.join(roles)}" if roles is not None else "a string"
            raise ScratchError(f"message {i} has role {role!r:.40}; a role must be {known}")
        if not isinstance(content, str):
            raise ScratchError(f"message {i} ({role}) has content of type {type(content).__name__}; "
                               "content must be a string")


@dataclass
class Rendered:
    """A rendered conversation: ids, and for each id whether the model is trained to produce it."""

    ids: list[int] = field(default_factory=list)
    trained: list[bool] = field(default_factory=list)

    def add(self, ids: list[int], trained: bool) -> None:
        self.ids += ids
        self.trained += [trained] * len(ids)


class ChatFormat(ABC):
    """How a model's conversations become ids (with its tokenizer). Build one with chat_format or
    load_chat_format."""

    is_native: bool
    template: str  # the Jinja chat template this format equals, as export-hf writes it
    stop_ids: frozenset[int]  # every id that ends an assistant turn

    def __init__(self, tokenizer: BPETokenizer, template: str, stop_ids: Iterable[int]) -> None:
        self.tokenizer = tokenizer
        self.template = template
        self.stop_ids = frozenset(stop_ids)

    @abstractmethod
    def render(self, messages: list[Message], add_generation_prompt: bool = False, tools: Sequence[str] = ()
               ) -> Rendered:
        """The ids of the conversation and the mask of trained tokens; add_generation_prompt appends what
        starts the assistant's next turn (nothing of it is trained). With tools, an assistant message is
        encoded in the pieces that generation with those tools produces (infer/tools.py segments), and what
        a tool feeds is never trained."""

    def prompt_ids(self, messages: list[Message], tools: Sequence[str] = ()) -> list[int]:
        """What a model continues to answer the conversation."""
        return self.render(messages, add_generation_prompt=True, tools=tools).ids


class NativeChat(ChatFormat):
    """Our format: bos, then role token + content + <|end|> per message (the module docstring)."""

    is_native = True

    def __init__(self, tokenizer: BPETokenizer) -> None:
        missing = [t for t in _NATIVE_TOKENS if tokenizer.token_id(t) is None]
        if missing:
            raise ScratchError(f"the tokenizer lacks the chat tokens {missing} and the run has no chat template; "
                               f"write one to the run's {CHAT_TEMPLATE_FILE}")
        super().__init__(tokenizer, NATIVE_TEMPLATE, {tokenizer.token_id(END_OF_TURN), tokenizer.token_id(EOS)})
        self._bos, self._end = tokenizer.token_id(BOS), tokenizer.token_id(END_OF_TURN)
        self._role_ids = {role: tokenizer.token_id(token) for role, token in ROLE_TOKENS.items()}

    def render(self, messages: list[Message], add_generation_prompt: bool = False, tools: Sequence[str] = ()
               ) -> Rendered:
        validate_messages(messages)
        out = Rendered()
        out.add([self._bos], trained=False)
        for message in messages:
            out.add([self._role_ids[message["role"]]], trained=False)
            if message["role"] != TRAINED_ROLE:
                out.add(self.tokenizer.encode(message["content"]) + [self._end], trained=False)
                continue
            for piece, fed in segments(message["content"], tools):
                out.add(self.tokenizer.encode(piece), trained=not fed)
            out.add([self._end], trained=True)
        if add_generation_prompt:
            out.add([self._role_ids[TRAINED_ROLE]], trained=False)
        return out


# ------------------------------------------------------------------------------------- imported templates


class _GenerationBlock(Extension):
    """Parses transformers' {% generation %}...{% endgeneration %} (it marks assistant text for its own
    mask) and renders the body unchanged: the mask here comes from prefixes, for every template."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML; chat templates want the JSON as it is.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _first_line(message: object) -> str:
    return (str(message).splitlines() or [""])[0]


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    """The Jinja setting transformers renders chat templates in: a sandbox (templates come from the hub),
    blocks that swallow their own line, loop controls, and the helpers templates call."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols, _GenerationBlock])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class TemplateChat(ChatFormat):
    """An imported model's own chat template, rendered as transformers renders it.

    Literal special-token text in a message is wrapped in two marker characters (private-use
    characters that appear nowhere in the conversation or the template) before rendering, and so is,
    with tools, each tool output in two others; the rendered text is then encoded piece by piece: what
    lies between markers as ordinary text, the rest with the template's special tokens as special ids.
    Tokens of a tool output are not trained.
    """

    is_native = False

    def __init__(self, tokenizer: BPETokenizer, template: str, stop_ids: Iterable[int]) -> None:
        super().__init__(tokenizer, template, stop_ids)
        try:
            self._compiled = _environment().from_string(template)
        except jinja2.TemplateSyntaxError as exc:
            raise ScratchError(f"the chat template does not parse (line {exc.lineno}: {_first_line(exc.message)}); "
                               f"fix the run's {CHAT_TEMPLATE_FILE}") from None
        self._variables = {f"{role}_token": token for role, token in tokenizer.roles.items() if token is not None}
        specials = tokenizer.special_tokens
        self._literal = re.compile("|".join(map(re.escape, specials))) if specials else None

    def _markers(self, messages: list[Message]) -> str:
        """Four characters that appear nowhere in the conversation or the template: start and end of a literal
        special token, start and end of a tool's output."""
        seen = set(self.template).union(*(set(v) for m in messages for v in m.values() if isinstance(v, str)))
        free = (chr(c) for c in range(0xF0000, 0xFFFFE) if chr(c) not in seen)
        return "".join(next(free) for _ in range(4))

    def _mark(self, messages: list[Message], markers: str, tools: Sequence[str]) -> list[Message]:
        """The messages with each literal special token wrapped in the first two markers and, with tools, each
        tool output in an assistant message wrapped in the last two."""
        start, end, fed_start, fed_end = markers

        def literal(text: str) -> str:
            return self._literal.sub(lambda m: start + m.group(0) + end, text) if self._literal else text

        def content(message: Message) -> str:
            if message["role"] != TRAINED_ROLE or not tools:
                return literal(message["content"])
            return "".join(fed_start + piece + fed_end if fed else literal(piece)
                           for piece, fed in segments(message["content"], tools))

        return [{k: content(message) if k == "content" else literal(v) if isinstance(v, str) else v
                 for k, v in message.items()} for message in messages]

    def _text(self, messages: list[Message], add_generation_prompt: bool) -> str:
        try:
            return self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, tools=None,
                                         documents=None, **self._variables)
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise ScratchError(f"the chat template refused the conversation: {_first_line(exc)}") from None

    def _encode(self, text: str, markers: str) -> tuple[list[int], list[int], list[tuple[int, int]]]:
        """Ids of a rendered text, where each token starts in it once the markers are removed, and where each
        tool output lies (start, end) there."""
        start, end, fed_start, fed_end = markers
        ids: list[int] = []
        starts: list[int] = []
        fed: list[tuple[int, int]] = []
        at = 0
        # Splitting on "start(token)end", "fed_start(output)fed_end" or a lone marker (a template may cut a
        # marked piece apart) gives [template text, marked token or None, tool output or None, template text, ...].
        inner = f"[^{markers}]*"  # markers are not regex syntax
        pieces = re.split(f"{start}({inner}){end}|{fed_start}({inner}){fed_end}|[{markers}]", text)
        for k, piece in enumerate(pieces):
            if not piece:
                continue
            piece_ids, piece_starts = self.tokenizer.encode_offsets(piece, specials=k % 3 == 0)
            ids += piece_ids
            starts += [at + s for s in piece_starts]
            if k % 3 == 2:
                fed.append((at, at + len(piece)))
            at += len(piece)
        return ids, starts, fed

    def render(self, messages: list[Message], add_generation_prompt: bool = False, tools: Sequence[str] = ()
               ) -> Rendered:
        validate_messages(messages, roles=None)
        markers = self._markers(messages)
        marked = self._mark(messages, markers, tools)
        text = self._text(marked, add_generation_prompt)
        ids, token_starts, fed = self._encode(text, markers)

        def plain(text: str) -> str:
            return re.sub(f"[{markers}]", "", text)

        full = plain(text)
        trained = [False] * len(ids)
        for i, message in enumerate(messages):
            if message["role"] != TRAINED_ROLE:
                continue
            before = plain(self._text(marked[:i], add_generation_prompt=True))
            through = plain(self._text(marked[:i + 1], add_generation_prompt=False))
            if not (full.startswith(before) and full.startswith(through) and len(before) <= len(through)):
                raise ScratchError("the chat template does not render a conversation as a growing text (an earlier "
                                   f"turn changes when message {i} is added), so the assistant's tokens cannot be "
                                   "told apart")
            # A token is trained when it starts inside the assistant's turn, outside what a tool fed.
            first, last = bisect.bisect_left(token_starts, len(before)), bisect.bisect_left(token_starts, len(through))
            trained[first:last] = [True] * (last - first)
        for fed_start, fed_end in fed:
            first, last = bisect.bisect_left(token_starts, fed_start), bisect.bisect_left(token_starts, fed_end)
            trained[first:last] = [False] * (last - first)
        return Rendered(ids, trained)


# ---------------------------------------------------------------------------------------------- loading


def chat_format(tokenizer: BPETokenizer, template: str | None = None, stop_ids: Iterable[int] | None = None
                ) -> ChatFormat:
    """Our format (template None, or our own template as an export wrote it), or a model's own template,
    whose turns end at the tokenizer's eos ids. stop_ids replaces the format's own."""
    if template is None or template == NATIVE_TEMPLATE:
        fmt: ChatFormat = NativeChat(tokenizer)
    else:
        fmt = TemplateChat(tokenizer, template, tokenizer.eos_ids)
    if stop_ids is not None:
        fmt.stop_ids = frozenset(stop_ids)
    return fmt


def find_chat_format(run_dir: str | Path, tokenizer: BPETokenizer | None = None) -> ChatFormat | None:
    """The run's chat format: the imported template it records, else ours; None for an imported model that
    has neither a template nor our chat tokens (a base model that was never taught to chat)."""
    path = Path(run_dir) / CHAT_TEMPLATE_FILE
    tokenizer = tokenizer or load_tokenizer(Path(run_dir))
    if path.is_file():
        return chat_format(tokenizer, path.read_text())
    if all(tokenizer.token_id(token) is not None for token in _NATIVE_TOKENS):
        return chat_format(tokenizer)
    return None


def load_chat_format(run_dir: str | Path, tokenizer: BPETokenizer | None = None) -> ChatFormat:
    """What every command that chats calls: the run's chat format, or a clear refusal."""
    fmt = find_chat_format(run_dir, tokenizer)
    if fmt is None:
        raise ScratchError(f"{run_dir} holds a model without a chat template; write one to "
                           f"{Path(run_dir) / CHAT_TEMPLATE_FILE} or fine-tune a model that has one")
    return fmt


def generation_stop_ids(tokenizer: BPETokenizer, fmt: ChatFormat | None) -> list[int]:
    """Every id that ends generation, eos first: the tokenizer's eos ids, the chat format's end of turn,
    and bos (a model that starts the next document has ended this one). export-hf writes this list as
    generation_config.json's eos_token_id; `scratchlm generate` should stop at the same ids."""
    chat_stops = sorted(fmt.stop_ids) if fmt is not None else []
    return list(dict.fromkeys([*tokenizer.eos_ids, *chat_stops, tokenizer.bos_id]))
