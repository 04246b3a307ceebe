"""`scratchlm serve RUN_DIR`: the engine behind OpenAI's API, and a web chat, over HTTP.

    POST /v1/chat/completions  POST /v1/completions  GET /v1/models    the API key, when one is set
    GET /health  GET /metrics (Prometheus)  GET / (the web chat)        open

A thin layer (docs/serving.md): uvicorn's event loop parses requests and writes responses; the engine
runs in its own thread (AsyncEngine). A request becomes n sequences per prompt, submitted together so
that they share the prompt's blocks; their outputs come back on asyncio queues and go out as one JSON
body or as server-sent events. A client that goes away aborts its sequences, which frees their blocks
before the next engine step. The request and response shapes are in infer/api.py.

The server refuses work it cannot queue: a request whose sequences would leave more than --max-waiting
of them waiting for one of the --max-running slots gets 429, and the client retries later.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from scratchlm.chat import ChatFormat, generation_stop_ids, load_chat_format
from scratchlm.errors import ScratchError
from scratchlm.infer import api
from scratchlm.infer.api import APIError, ChatRequest, CompletionRequest
from scratchlm.infer.async_engine import AsyncEngine, RequestHandle
from scratchlm.infer.engine import Completion, Engine, RequestOutput

log = logging.getLogger("scratchlm.serve")

SHUTDOWN_GRACE_S = 10  # after SIGTERM, running requests have this long to finish before they are aborted
DEFAULT_PORT = 8000
DEFAULT_MAX_WAITING = 256
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class EngineCollector:
    """The engine's own counts, read at every scrape (prometheus_client's custom collector protocol)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def collect(self):
        m = self.engine.metrics()
        yield GaugeMetricFamily("scratchlm_num_requests_running", "Sequences in the running batch", m.running)
        yield GaugeMetricFamily("scratchlm_num_requests_waiting", "Sequences waiting for a slot", m.waiting)
        yield GaugeMetricFamily("scratchlm_kv_blocks_in_use", "KV cache blocks held by sequences", m.blocks_in_use)
        yield GaugeMetricFamily("scratchlm_kv_blocks_cached", "KV cache blocks held by nobody, kept as a findable "
                                "prefix until evicted", m.blocks_cached)
        yield GaugeMetricFamily("scratchlm_kv_blocks_total", "KV cache blocks in the pool", m.blocks_total)
        yield CounterMetricFamily("scratchlm_prompt_tokens", "Prompt tokens of every request", m.prompt_tokens)
        yield CounterMetricFamily("scratchlm_prefix_cache_hit_tokens", "Prompt tokens the prefix cache supplied",
                                  m.cached_tokens)
        yield CounterMetricFamily("scratchlm_generation_tokens", "Tokens generated", m.generated_tokens)
        yield CounterMetricFamily("scratchlm_preemptions", "Sequences preempted for lack of KV blocks", m.preemptions)


class Metrics:
    """What /metrics shows: the server's request counts and latencies, and the engine's counts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("scratchlm_requests", "Requests by route and HTTP status",
                                ["endpoint", "status"], registry=self.registry)
        self.ttft = Histogram("scratchlm_time_to_first_token_seconds", "From a request's arrival to its first token",
                              buckets=LATENCY_BUCKETS, registry=self.registry)
        self.e2e = Histogram("scratchlm_e2e_request_latency_seconds", "From a request's arrival to its last token",
                             buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(EngineCollector(engine))

    def count(self, request: Request, status: int) -> None:
        """One request, labelled by its route ("other" for a path no route has: labels must stay few)."""
        route = request.scope.get("route")
        self.requests.labels(getattr(route, "path", "other"), str(status)).inc()


class Timing:
    """One request's latencies, observed once each."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.start = time.perf_counter()
        self.first = False

    def output(self, out: RequestOutput) -> None:
        if out.token_ids and not self.first:
            self.first = True
            self.metrics.ttft.observe(time.perf_counter() - self.start)

    def done(self) -> None:
        self.metrics.e2e.observe(time.perf_counter() - self.start)


class Batch:
    """The sequences of one request: n per prompt, choice index = prompt index * n + j."""

    def __init__(self, prompts: list[list[int]], n: int, handles: list[RequestHandle]) -> None:
        self.n, self.handles = n, handles
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.cached = [0] * len(prompts)  # the prefix cache's share of each prompt, as its first choice saw it

    def note(self, index: int, out: RequestOutput) -> None:
        if index % self.n == 0:
            self.cached[index // self.n] = out.cached_tokens

    @property
    def cached_tokens(self) -> int:
        return sum(self.cached)

    def abort(self) -> None:
        for handle in self.handles:
            handle.abort()


async def merged(handles: Sequence[RequestHandle]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """The outputs of several requests as they come, each with its request's index."""
    if len(handles) == 1:  # the common case, without a task per output
        async for out in handles[0]:
            yield 0, out
        return
    iterators = [aiter(h) for h in handles]
    pending = {asyncio.ensure_future(anext(it)): i for i, it in enumerate(iterators)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                i = pending.pop(task)
                try:
                    out = task.result()
                except StopAsyncIteration:
                    continue
                pending[asyncio.ensure_future(anext(iterators[i]))] = i
                yield i, out
    finally:
        for task in pending:
            task.cancel()


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects (the request's body has been read, so nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def guarded(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """A stream whose engine fails mid-way ends with an error event (OpenAI's error JSON, which the openai
    client raises as APIError) instead of a cut connection; the status line has long been sent."""
    try:
        async for line in events:
            yield line
    except Exception as exc:  # a failed engine step: AsyncEngine hands its error to every request
        log.exception("a streamed request failed")
        yield sse(APIError(500, f"the engine failed: {exc}", type="server_error").body())


def sse(data: dict[str, Any]) -> str:
    """One server-sent event, compact JSON as OpenAI sends it."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ModelServer:
    """One model served: the engine, its chat format, and the handlers of the routes."""

    def __init__(self, engine: AsyncEngine, fmt: ChatFormat, model_name: str, api_key: str | None = None,
                 max_waiting: int = DEFAULT_MAX_WAITING) -> None:
        if max_waiting < 0:
            raise ScratchError(f"--max-waiting must be 0 or more, got {max_waiting}")
        self.engine = engine
        self.fmt = fmt
        self.tokenizer = fmt.tokenizer
        self.model_name = model_name
        self.api_key = api_key
        self.max_waiting = max_waiting
        self.max_running = engine.engine.scheduler.max_running
        self.context = engine.engine.context_len
        self.stop_ids = generation_stop_ids(self.tokenizer, fmt)
        self.names = api.TokenNames(self.tokenizer)
        self.metrics = Metrics(engine)
        self.created = api.now()

    # ------------------------------------------------------------------------------- checks

    def check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise APIError(401, "missing or wrong API key; send the server's key as Authorization: Bearer KEY",
                           code="invalid_api_key")

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise APIError(404, f"the model `{model}` does not exist; this server serves `{self.model_name}`",
                           param="model", code="model_not_found")

    def check_room(self, sequences: int) -> None:
        """429 while the queue cannot take the request's sequences; 400 if it never could."""
        limit = self.max_running + self.max_waiting
        if sequences > limit:
            raise APIError(400, f"the request asks for {sequences} sequences (n times the prompts), but this server "
                           f"holds at most {limit} (--max-running + --max-waiting); lower n", param="n")
        m = self.engine.metrics()
        if m.running + m.waiting + sequences > limit:
            raise APIError(429, f"the server is busy ({m.running} running, {m.waiting} waiting); retry later",
                           type="rate_limit_error", code="queue_full")

    # ------------------------------------------------------------------------------- routes

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_card()]}

    def model_card(self) -> dict[str, Any]:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "scratchlm",
                "max_model_len": self.context}

    def health(self) -> dict[str, Any]:
        m = self.engine.metrics()
        return {"status": "ok", "running": m.running, "waiting": m.waiting, "kv_blocks_in_use": m.blocks_in_use,
                "kv_blocks_total": m.blocks_total}

    async def chat(self, body: ChatRequest, request: Request) -> Response:
        timing = Timing(self.metrics)
        self.check_model(body.model)
        ids = self.fmt.prompt_ids(api.chat_messages(body.messages))
        batch = self.submit(body, [ids])
        names = self.names if body.logprobs else None
        if body.stream:
            maker = api.ChunkMaker("chat", api.new_id("chatcmpl"), self.model_name, body.include_usage)
            return self.stream(request, self.chat_events(batch, maker, names, timing))
        choices = await self.collect(batch, request, timing)
        if choices is None:
            return self.client_gone(request)
        self.metrics.count(request, 200)
        return JSONResponse(api.chat_response(api.new_id("chatcmpl"), self.model_name, choices, batch.prompt_tokens,
                                              batch.cached_tokens, names))

    async def completions(self, body: CompletionRequest, request: Request) -> Response:
        timing = Timing(self.metrics)
        self.check_model(body.model)
        api.refuse_unsupported(body)
        prompts = api.completion_prompts(body)
        batch = self.submit(body, [api.prompt_ids(p, self.tokenizer) for p in prompts])
        names = self.names if body.logprobs is not None else None
        echoed = [api.prompt_text(p, self.tokenizer, body.skip_special_tokens) if body.echo else ""
                  for p in prompts for _ in range(body.n)]
        if body.stream:
            maker = api.ChunkMaker("completion", api.new_id("cmpl"), self.model_name, body.include_usage)
            return self.stream(request, self.completion_events(batch, maker, names, echoed, timing))
        choices = await self.collect(batch, request, timing)
        if choices is None:
            return self.client_gone(request)
        self.metrics.count(request, 200)
        return JSONResponse(api.completion_response(api.new_id("cmpl"), self.model_name, choices, echoed,
                                                    batch.prompt_tokens, batch.cached_tokens, names))

    # ------------------------------------------------------------------------------- the engine

    def submit(self, body: ChatRequest | CompletionRequest, prompts: list[list[int]]) -> Batch:
        """Every sequence of the request into the engine, or none: a refusal aborts those already in."""
        params = [api.sampling_params(body, len(ids), self.context, self.stop_ids, j)
                  for ids in prompts for j in range(body.n)]
        self.check_room(len(params))
        handles: list[RequestHandle] = []
        try:
            for i, p in enumerate(params):
                handles.append(self.engine.submit(prompts[i // body.n], p))
        except ScratchError:
            for handle in handles:
                handle.abort()
            raise
        return Batch(prompts, body.n, handles)

    async def collect(self, batch: Batch, request: Request, timing: Timing) -> list[Completion] | None:
        """Every choice put together; None if the client went away first (its sequences are aborted)."""
        choices = [Completion(h.request_id) for h in batch.handles]

        async def fill() -> None:
            async for i, out in merged(batch.handles):
                timing.output(out)
                batch.note(i, out)
                choices[i].add(out)

        filling, gone = asyncio.ensure_future(fill()), asyncio.ensure_future(client_gone(request))
        try:
            await asyncio.wait({filling, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not filling.done():
                return None
            filling.result()  # the engine's error, if a step failed
            timing.done()
            return choices
        finally:
            filling.cancel()
            gone.cancel()
            batch.abort()

    def stream(self, request: Request, events: AsyncIterator[str]) -> StreamingResponse:
        self.metrics.count(request, 200)
        return StreamingResponse(guarded(events), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def client_gone(self, request: Request) -> Response:
        self.metrics.count(request, 499)
        return Response(status_code=499)  # nobody reads it; the access log and /metrics do

    async def chat_events(self, batch: Batch, maker: api.ChunkMaker, names: api.TokenNames | None, timing: Timing
                          ) -> AsyncIterator[str]:
        """The chat stream: a role chunk per choice, then text chunks and finish chunks as the engine
        produces them, the usage chunk if asked, then [DONE]. Closing it (a client gone) aborts the rest."""
        try:
            for i in range(len(batch.handles)):
                yield sse(maker.chat_role(i))
            generated = 0
            async for i, out in self.outputs(batch, timing):
                for chunk in maker.chat_output(i, out, names):
                    yield sse(chunk)
                generated += len(out.token_ids)
            async for line in self.ending(maker, batch, generated, timing):
                yield line
        finally:
            batch.abort()

    async def completion_events(self, batch: Batch, maker: api.ChunkMaker, names: api.TokenNames | None,
                                echoed: list[str], timing: Timing) -> AsyncIterator[str]:
        """The completions stream: the echoed prompt first (with echo), then a chunk per piece of text."""
        try:
            for i, text in enumerate(echoed):
                if text:
                    yield sse(maker.completion_text(i, text))
            offsets = [len(text) for text in echoed]
            generated = 0
            async for i, out in self.outputs(batch, timing):
                for chunk in maker.completion_output(i, out, names, offsets[i]):
                    yield sse(chunk)
                offsets[i] += len(out.text)
                generated += len(out.token_ids)
            async for line in self.ending(maker, batch, generated, timing):
                yield line
        finally:
            batch.abort()

    async def outputs(self, batch: Batch, timing: Timing) -> AsyncIterator[tuple[int, RequestOutput]]:
        async for i, out in merged(batch.handles):
            timing.output(out)
            batch.note(i, out)
            yield i, out

    async def ending(self, maker: api.ChunkMaker, batch: Batch, generated: int, timing: Timing
                     ) -> AsyncIterator[str]:
        timing.done()
        if maker.include_usage:
            yield sse(maker.usage_chunk(batch.prompt_tokens, generated, batch.cached_tokens))
        yield "data: [DONE]\n\n"


# ------------------------------------------------------------------------------------------ the app


def create_app(server: ModelServer) -> FastAPI:
    """The FastAPI app of one ModelServer; its lifespan starts and stops the engine thread."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        server.engine.start()
        yield
        server.engine.stop()  # aborts whatever still runs

    app = FastAPI(title="scratchlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    keyed = [Depends(server.check_key)]
    app.post("/v1/chat/completions", dependencies=keyed)(server.chat)
    app.post("/v1/completions", dependencies=keyed)(server.completions)
    app.get("/v1/models", dependencies=keyed)(server.models)

    @app.get("/v1/models/{model}", dependencies=keyed)
    def model(model: str) -> dict[str, Any]:
        server.check_model(model)
        return server.model_card()

    app.get("/health")(server.health)

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("scratchlm.infer").joinpath("web/index.html").read_text()

    @app.get("/", response_class=HTMLResponse)
    def web_chat() -> str:
        return page

    def error(request: Request, exc: APIError) -> JSONResponse:
        server.metrics.count(request, exc.status)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(APIError)
    def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error(request, exc)

    @app.exception_handler(ScratchError)
    def bad_input(request: Request, exc: ScratchError) -> JSONResponse:
        """The engine's and the chat format's refusals (a prompt longer than the context, a bad role, ...)."""
        return error(request, APIError(400, str(exc)))

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 becomes OpenAI's 400, naming the first field at fault."""
        return error(request, api.validation_error(exc.errors()))

    @app.exception_handler(ValidationError)
    def invalid_inside(request: Request, exc: ValidationError) -> JSONResponse:
        return error(request, api.validation_error(exc.errors()))

    @app.exception_handler(Exception)
    def failed(request: Request, exc: Exception) -> JSONResponse:
        """A failed engine step (not the client's doing), in the same JSON shape; Starlette logs the traceback."""
        return error(request, APIError(500, f"the engine failed: {exc}", type="server_error"))

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Unknown paths and methods, in the same JSON shape."""
        return error(request, APIError(exc.status_code, str(exc.detail), type="invalid_request_error"))

    return app


# ------------------------------------------------------------------------------------------ serving


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one clear line (and port 0 picks one)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ScratchError(f"--host {host}: {exc.strerror}; give an address such as 127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ScratchError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    return sock


def load_server(run_dir: str | Path, model_name: str | None = None, api_key: str | None = None,
                max_waiting: int = DEFAULT_MAX_WAITING, max_running: int = 64, device: str = "auto") -> ModelServer:
    """A run's latest weights on an engine, with the run's chat format; model_name defaults to the
    run directory's name."""
    from scratchlm.hardware import resolve_device
    from scratchlm.run import load_run

    _, tokenizer, model = load_run(run_dir, resolve_device(device))
    fmt = load_chat_format(run_dir, tokenizer)
    engine = AsyncEngine(Engine(model, (), tokenizer, max_running=max_running))
    return ModelServer(engine, fmt, model_name or Path(run_dir).resolve().name, api_key, max_waiting)


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, api_key: str | None = None,
          max_waiting: int = DEFAULT_MAX_WAITING, max_running: int = 64, device: str = "auto",
          model_name: str | None = None) -> None:
    """Serve until SIGTERM or Ctrl-C, then stop accepting, give running requests SHUTDOWN_GRACE_S seconds,
    abort the rest and return."""
    import uvicorn

    sock = listen(host, port)
    server = load_server(run_dir, model_name, api_key, max_waiting, max_running, device)
    app = create_app(server)
    config = uvicorn.Config(app, timeout_graceful_shutdown=SHUTDOWN_GRACE_S, log_level="info")
    host, port = sock.getsockname()[:2]
    print(f"serving {run_dir} as model `{server.model_name}` on http://{host}:{port} (web chat at /, OpenAI API at "
          f"/v1{', API key required' if api_key else ''})", flush=True)
    # uvicorn handles SIGTERM and SIGINT itself and, once it has shut down, raises the signal again for
    # the handler it found; this one takes it, so a clean stop ends with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run(sockets=[sock])
