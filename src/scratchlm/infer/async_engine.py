"""The engine loop in its own thread, for servers: requests come from asyncio tasks, outputs go back
to each request's own asyncio queue.

    engine thread:   loop { take new requests and aborts; step(); hand each output to its request }
    event loop:      handle = async_engine.submit(prompt ids, params)   # refuses bad input here, at once
                     async for out in handle: ...                       # RequestOutput, until finished
                     handle.abort()                                     # client gone: blocks freed now

Only the engine thread touches the engine, so the engine needs no locks: submit and abort post to an
inbox that the thread drains between steps. An abort therefore lands within one step (a decode step
takes milliseconds), and it frees the sequence's blocks before the next step is scheduled. The
thread sleeps while there is nothing to do.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from scratchlm.infer.engine import Engine, EngineMetrics, RequestOutput
from scratchlm.infer.sampling import SamplingParams


class RequestHandle:
    """One submitted request: iterate it for its outputs; abort it to free its sequence."""

    def __init__(self, owner: AsyncEngine, request_id: str) -> None:
        self.owner = owner
        self.request_id = request_id
        self.queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        while not self.finished:
            out = await self.queue.get()
            if isinstance(out, BaseException):
                self.finished = True
                raise out
            self.finished = out.finished
            yield out

    def send(self, item: RequestOutput | BaseException) -> None:
        """From the engine thread: queue an output on the request's event loop (unless that loop is gone)."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def abort(self) -> None:
        """Stop the request (a no-op once it finished); its blocks go back before the next step."""
        if not self.finished:
            self.owner.abort(self.request_id)


class AsyncEngine:
    """An Engine served from its own thread: start(), submit() from coroutines, metrics(), stop()."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._new: list[tuple[RequestHandle, list[int], SamplingParams]] = []
        self._aborts: list[str] = []
        self._handles: dict[str, RequestHandle] = {}
        self._ids = itertools.count()
        self._stopping = False
        self._drain = False  # on stop: finish what was submitted instead of aborting it
        self._metrics = engine.metrics()
        self._thread = threading.Thread(target=self._run, name="scratchlm-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain: bool = False) -> None:
        """Refuse new requests, then abort whatever is waiting or running (each gets its "abort" output),
        or with drain finish it, and end the thread."""
        with self._wake:
            self._stopping, self._drain = True, drain
            self._wake.notify()
        self._thread.join()

    def submit(self, prompt: Sequence[int], params: SamplingParams) -> RequestHandle:
        """Queue a request from a coroutine. Bad input raises ScratchError here, before anything is queued."""
        self.engine.check(prompt, params)
        handle = RequestHandle(self, f"req-{next(self._ids)}")
        with self._wake:
            if self._stopping:
                raise RuntimeError("the engine is stopping and takes no new requests")
            self._new.append((handle, list(prompt), params))
            self._wake.notify()
        return handle

    def abort(self, request_id: str) -> None:
        with self._wake:
            self._aborts.append(request_id)
            self._wake.notify()

    def metrics(self) -> EngineMetrics:
        """As of the last step, counting requests submitted since then as waiting."""
        with self._lock:
            return replace(self._metrics, waiting=self._metrics.waiting + len(self._new))

    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._new or self._aborts or self._stopping or self.engine.has_work()):
                    self._wake.wait()
                new, self._new = self._new, []
                aborts, self._aborts = self._aborts, []
                stopping, drain = self._stopping, self._drain
            for handle, prompt, params in new:
                self._handles[handle.request_id] = handle
                self.engine.add_request(prompt, params, handle.request_id)
            if stopping and not drain:
                aborts += list(self._handles)
            outputs = [out for request_id in aborts if (out := self.engine.abort(request_id)) is not None]
            if self.engine.has_work():
                outputs += self._step()
            with self._lock:  # before delivering: a client that sees its request end sees its blocks freed
                self._metrics = self.engine.metrics()
            self._deliver(outputs)
            if stopping and not self.engine.has_work():
                return

    def _step(self) -> list[RequestOutput]:
        """One engine step. A step that fails (out of memory, a bug) fails every request with its error,
        rather than leaving their clients waiting forever, and the loop goes on with an empty engine."""
        try:
            return self.engine.step()
        except Exception as exc:
            for request_id, handle in list(self._handles.items()):
                self.engine.abort(request_id)
                handle.send(exc)
            self._handles.clear()
            return []

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            handle = self._handles.get(out.request_id)
            if handle is None:
                continue
            if out.finished:
                del self._handles[out.request_id]
            handle.send(out)
