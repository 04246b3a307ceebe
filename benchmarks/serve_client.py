"""What benchmarks/serve.py and benchmarks/soak.py share: a `scratchlm serve` that they start themselves
(or one already running at a URL), and one streamed request timed chunk by chunk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

LISTENING = re.compile(r"on (http://[^ ]+:\d+)")


class Server:
    """A server to load: started here from a run directory (and stopped at the end), or given by URL."""

    def __init__(self, url: str, key: str | None = None, proc: subprocess.Popen | None = None) -> None:
        self.url, self.key, self.proc = url.rstrip("/"), key, proc

    @classmethod
    def start(cls, run_dir: str, serve_args: list[str], log: Path, timeout: float = 600) -> Server:
        """`python -m scratchlm serve RUN_DIR --port 0 ARGS`, output to `log`, once /health answers."""
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "scratchlm", "serve", run_dir, "--port", "0", *serve_args],
                                    stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not (found := LISTENING.search(log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                sys.exit(f"scratchlm serve did not start:\n{log.read_text()}")
            time.sleep(0.2)
        server = cls(found.group(1), proc=proc)
        while True:
            try:
                server.health()
                return server
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"scratchlm serve does not answer:\n{log.read_text()}")
                time.sleep(0.2)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, headers=self.headers())
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def health(self) -> dict:
        """scratchlm's /health JSON ({} from a server whose /health has no body, such as vLLM's)."""
        return json.loads(self.get("/health") or b"{}")

    def model(self) -> dict:
        return json.loads(self.get("/v1/models"))["data"][0]

    def metric(self, name: str) -> float | None:
        """One unlabelled sample of /metrics (None if the server has no such metric)."""
        for line in self.get("/metrics").decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_idle(self, timeout: float = 60) -> dict:
        """/health once nothing runs, waits or holds a KV block (or once timeout seconds have passed)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            busy = [health.get(key, 0) for key in ("running", "waiting", "kv_blocks_in_use")]
            if not any(busy) or time.monotonic() > deadline:
                return health
            time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM to a server started here; its exit status (None for one given by URL)."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


@dataclass
class Timed:
    """One streamed request: when each chunk came, what it said, and how it ended."""

    status: int = 0
    start: float = 0.0
    ttft: float | None = None  # seconds to the first chunk with a choice in it
    chunk_gaps: list[float] = field(default_factory=list)  # seconds between chunks with a choice
    latency: float = 0.0
    chunks: list[dict] = field(default_factory=list)
    done: bool = False  # the stream ended with data: [DONE]
    error: str = ""

    @property
    def usage(self) -> dict | None:
        return next((c["usage"] for c in reversed(self.chunks) if c.get("usage")), None)


async def stream(session: aiohttp.ClientSession, server: Server, path: str, payload: dict,
                 leave_after: int | None = None) -> Timed:
    """POST a streaming request and read its server-sent events; leave_after: close the connection after
    that many chunks, as a client that goes away does."""
    timed = Timed(start=time.perf_counter())
    last = timed.start
    async with session.post(server.url + path, json=payload | {"stream": True}, headers=server.headers()) as resp:
        timed.status = resp.status
        if resp.status != 200:
            timed.error = (await resp.text())[:200]
            return timed
        async for line in resp.content:
            if not line.strip():
                continue
            if not line.startswith(b"data: "):
                timed.error = f"not a server-sent event: {line[:80]!r}"
                break
            data = line[6:].strip()
            if data == b"[DONE]":
                timed.done = True
                break
            chunk = json.loads(data)
            timed.chunks.append(chunk)
            now = time.perf_counter()
            if chunk.get("choices"):
                if timed.ttft is None:
                    timed.ttft = now - timed.start
                else:
                    timed.chunk_gaps.append(now - last)
                last = now
            if leave_after is not None and len(timed.chunks) >= leave_after:
                resp.close()  # drops the connection: the server sees the client gone
                break
    timed.latency = time.perf_counter() - timed.start
    return timed
