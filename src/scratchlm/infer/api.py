"""The OpenAI API's shapes: request bodies in, response bodies and stream chunks out.

No web framework here: server.py parses a body into ChatRequest or CompletionRequest, turns it into
prompt ids and SamplingParams with the functions below, runs them on the engine and puts the dicts
these functions build on the wire. Fields the engine has no use for (presence_penalty, user, ...)
are accepted and ignored, as vLLM does, so a client written for OpenAI works unchanged.

Extensions beside OpenAI's fields, named as vLLM names them: `top_k`, `ignore_eos` (generate all
max_tokens, for benchmarks) and `skip_special_tokens`.

Counting: `usage.prompt_tokens` is the length of the ids the model read (the rendered conversation,
chat markup included), once per prompt however large `n` is; `completion_tokens` counts every token
generated, the one that ended the turn too. Log-probabilities cover the tokens of the text, so the
token that ended the turn is not among them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scratchlm.infer.engine import Completion, RequestOutput
from scratchlm.infer.sampling import MAX_TOP_LOGPROBS, SamplingParams
from scratchlm.tokenizer import BPETokenizer

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's (and vLLM's) default for /v1/completions


class APIError(Exception):
    """A refusal with its HTTP status, sent as OpenAI's error JSON."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Request(BaseModel):
    """What chat and completions requests share. None stands for "not given" (some clients send null)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # -1 or 0: off
    n: int = Field(1, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatRequest(_Request):
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)  # also return this many alternatives per token
    echo: bool = False
    suffix: str | None = None


def chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The conversation as the chat format takes it: content given as a list of text parts is joined,
    "developer" (OpenAI's newer name for the system role) becomes "system", other fields go."""
    out = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"message {i}: only text content parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        role = message.get("role")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def completion_prompts(request: CompletionRequest) -> list[str | list[int]]:
    """The request's prompts as a list: each a text or a list of token ids."""
    prompt = request.prompt
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty; give a string, a list of strings or a list of token ids",
                       param="prompt")
    return prompt


def prompt_ids(prompt: str | list[int], tokenizer: BPETokenizer) -> list[int]:
    """A text encoded with the tokenizer's bos convention; ids as they are."""
    return tokenizer.encode(prompt, bos=tokenizer.add_bos) if isinstance(prompt, str) else list(prompt)


def prompt_text(prompt: str | list[int], tokenizer: BPETokenizer, skip_special: bool) -> str:
    """What echo returns: the text as given, or the ids decoded."""
    return prompt if isinstance(prompt, str) else tokenizer.decode(prompt, skip_special=skip_special)


def refuse_unsupported(request: CompletionRequest) -> None:
    if request.suffix:
        raise APIError(400, "suffix is not supported; put the text to continue in prompt", param="suffix")
    if request.echo and request.logprobs is not None:
        raise APIError(400, "echo with logprobs would need the prompt's log-probabilities, which this server does "
                       "not compute; drop one of them", param="echo")


def validation_error(errors: Sequence[Mapping[str, Any]]) -> APIError:
    """pydantic's first complaint about a body, as a 400 that names the field."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        return APIError(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})")
    field = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    return APIError(400, f"{field or 'request body'}: {first['msg']}", param=field or None)


def sampling_params(request: ChatRequest | CompletionRequest, prompt_len: int, context: int,
                    stop_token_ids: Iterable[int], index: int) -> SamplingParams:
    """The engine's parameters for choice `index` of a request. With a seed, choice i draws from seed + i:
    the same request gives the same n texts, and the n texts differ from each other."""
    if isinstance(request, ChatRequest):
        requested, default = request.requested_tokens, context - prompt_len
        if request.top_logprobs is not None and not request.logprobs:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        top_logprobs = (request.top_logprobs or 0) if request.logprobs else 0
    else:
        requested, default = request.max_tokens, COMPLETIONS_DEFAULT_MAX_TOKENS
        top_logprobs = request.logprobs or 0
    if requested is not None and prompt_len < context < prompt_len + requested:
        raise APIError(400, f"the prompt is {prompt_len} tokens and max_tokens {requested}, but the model's context "
                       f"is {context}; ask for at most {context - prompt_len} tokens", param="max_tokens")
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return SamplingParams(
        max_new_tokens=max(1, requested if requested is not None else default),
        temperature=1.0 if request.temperature is None else request.temperature,
        top_k=max(0, request.top_k or 0), top_p=1.0 if request.top_p is None else request.top_p,
        seed=None if request.seed is None else request.seed + index, stop=stop,
        stop_token_ids=[] if request.ignore_eos else sorted(stop_token_ids), top_logprobs=top_logprobs,
        skip_special_tokens=request.skip_special_tokens)


# ------------------------------------------------------------------------------------------ responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def text_tokens(out: RequestOutput | Completion) -> int:
    """How many of the tokens belong to the text: all but a stop token that ended the sequence."""
    return len(out.token_ids) - (1 if isinstance(out.stop_reason, int) else 0)


class TokenNames:
    """Each token's own text, as the logprobs of the API show it (special tokens by their names)."""

    def __init__(self, tokenizer: BPETokenizer) -> None:
        self.tokenizer = tokenizer
        self.names: dict[int, str] = {}

    def __call__(self, token: int) -> str:
        if token not in self.names:
            self.names[token] = self.tokenizer.decode([token])
        return self.names[token]

    def chat_entry(self, token: int, logprob: float) -> dict[str, Any]:
        name = self(token)
        return {"token": name, "logprob": logprob, "bytes": list(name.encode())}

    def chat_logprobs(self, out: RequestOutput | Completion) -> dict[str, Any]:
        """{"content": [...]}: per token its text, log-probability, bytes and top alternatives."""
        n = text_tokens(out)
        tops = out.top_logprobs or [[]] * len(out.token_ids)
        return {"content": [self.chat_entry(token, logprob) | {"top_logprobs": [self.chat_entry(*t) for t in top]}
                            for token, logprob, top in zip(out.token_ids[:n], out.logprobs[:n], tops[:n], strict=True)]}

    def completion_logprobs(self, out: RequestOutput | Completion, offset: int) -> dict[str, Any]:
        """The legacy completions shape; text_offset counts characters from offset (the text sent before)."""
        n = text_tokens(out)
        tokens = [self(t) for t in out.token_ids[:n]]
        tops = out.top_logprobs or [[]] * len(out.token_ids)
        offsets = []
        for name in tokens:
            offsets.append(offset)
            offset += len(name)
        return {"tokens": tokens, "token_logprobs": out.logprobs[:n],
                "top_logprobs": [{self(t): lp for t, lp in top} for top in tops[:n]], "text_offset": offsets}


def chat_response(request_id: str, model: str, choices: list[Completion], prompt_tokens: int, cached_tokens: int,
                  names: TokenNames | None) -> dict[str, Any]:
    """A whole chat.completion; names given: with logprobs."""
    return {
        "id": request_id, "object": "chat.completion", "created": now(), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                     "logprobs": names.chat_logprobs(c) if names else None, "finish_reason": c.finish_reason}
                    for i, c in enumerate(choices)],
        "usage": usage(prompt_tokens, sum(len(c.token_ids) for c in choices), cached_tokens),
    }


def completion_response(request_id: str, model: str, choices: list[Completion], prefixes: list[str],
                        prompt_tokens: int, cached_tokens: int, names: TokenNames | None) -> dict[str, Any]:
    """A whole text_completion; prefixes: the echoed prompt text of each choice ("" without echo)."""
    return {
        "id": request_id, "object": "text_completion", "created": now(), "model": model,
        "choices": [{"index": i, "text": prefix + c.text,
                     "logprobs": names.completion_logprobs(c, len(prefix)) if names else None,
                     "finish_reason": c.finish_reason}
                    for i, (c, prefix) in enumerate(zip(choices, prefixes, strict=True))],
        "usage": usage(prompt_tokens, sum(len(c.token_ids) for c in choices), cached_tokens),
    }


class ChunkMaker:
    """The chunks of one streamed request, as OpenAI sends them. Every chunk carries the request's id,
    creation time and model; with stream_options.include_usage every chunk has "usage": null and a
    last chunk with no choices carries the usage."""

    def __init__(self, kind: Literal["chat", "completion"], request_id: str, model: str, include_usage: bool) -> None:
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.head = {"id": request_id, "object": self.object, "created": now(), "model": model}
        self.include_usage = include_usage

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return self.head | {"choices": choices} | ({"usage": None} if self.include_usage else {})

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
        return self.head | {"choices": [], "usage": usage(prompt_tokens, completion_tokens, cached_tokens)}

    def chat_role(self, index: int) -> dict[str, Any]:
        """The first chunk of each choice: the role, no text yet."""
        return self.chunk([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                            "finish_reason": None}])

    def chat_output(self, index: int, out: RequestOutput, names: TokenNames | None) -> list[dict[str, Any]]:
        """The chunks of one engine output: its text (with its logprobs) if any, then, when it ends the
        choice, an empty delta with the finish reason."""
        chunks = []
        logprobs = names.chat_logprobs(out) if names and text_tokens(out) else None
        if out.text or logprobs:
            chunks.append(self.chunk([{"index": index, "delta": {"content": out.text}, "logprobs": logprobs,
                                       "finish_reason": None}]))
        if out.finished:
            chunks.append(self.chunk([{"index": index, "delta": {}, "logprobs": None,
                                       "finish_reason": out.finish_reason}]))
        return chunks

    def completion_text(self, index: int, text: str) -> dict[str, Any]:
        return self.chunk([{"index": index, "text": text, "logprobs": None, "finish_reason": None}])

    def completion_output(self, index: int, out: RequestOutput, names: TokenNames | None, offset: int
                          ) -> list[dict[str, Any]]:
        """One chunk per engine output that has text, tokens to report or a finish reason."""
        logprobs = names.completion_logprobs(out, offset) if names and text_tokens(out) else None
        if not (out.text or logprobs or out.finished):
            return []
        return [self.chunk([{"index": index, "text": out.text, "logprobs": logprobs,
                             "finish_reason": out.finish_reason}])]
