"""A real `scratchlm serve` in a subprocess, on a loopback port it picks itself, for the server and web
chat tests; and the small chat run it serves."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import FAST, run_cli, subprocess_env

LISTENING = re.compile(r"on (http://127\.0\.0\.1:\d+)")


def make_run(out: Path, corpus: Path, context: int, steps: int = 30) -> Path:
    """A small model that has seen a few batches of the corpus (enough to write words, not sense), with a
    context of `context` tokens; our chat format comes with its tokenizer."""
    fast = list(FAST)
    fast[fast.index("--model.max_seq_len") + 1] = str(context)
    run_cli("pretrain", "--data", str(corpus), "--out", str(out), "--max-steps", str(steps), "--samples", "0", *fast)
    return out


class LiveServer:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def get(self, path: str, key: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: dict, key: str | None = None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
        request = urllib.request.Request(self.url + path, json.dumps(body).encode(), headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict:
        status, body = self.get("/health")
        assert status == 200, body
        return json.loads(body)

    def metrics(self) -> dict[str, float]:
        """/metrics as {name{labels}: value}."""
        status, body = self.get("/metrics")
        assert status == 200, body
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def wait_idle(self, timeout: float = 60) -> dict:
        """Poll /health until nothing runs, waits or holds a KV block."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if health["running"] == health["waiting"] == health["kv_blocks_in_use"] == 0:
                return health
            assert time.monotonic() < deadline, f"the server is still busy: {health}"
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_server(run_dir: Path, log: Path, *args: str, env: dict | None = None, timeout: float = 180) -> LiveServer:
    """`scratchlm serve RUN_DIR --port 0 ARGS`, once it answers /health. Its output goes to `log` (a pipe
    nobody reads would fill up and stall it)."""
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scratchlm", "serve", str(run_dir), "--port", "0", *args],
                                stdout=out, stderr=subprocess.STDOUT, env=subprocess_env(**(env or {})))
    deadline = time.monotonic() + timeout
    while not (found := LISTENING.search(log.read_text())):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"scratchlm serve did not start:\n{log.read_text()}")
        time.sleep(0.1)
    server = LiveServer(proc, found.group(1), log)
    while True:
        try:
            server.health()
            return server
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"scratchlm serve does not answer:\n{log.read_text()}") from None
            time.sleep(0.1)
