"""Soak: many concurrent streaming clients for a while against `scratchlm serve`, a share of them leaving
at random points.

    python benchmarks/soak.py --run RUN_DIR                  # 64 clients, 60 s, a quarter leaving
    python benchmarks/soak.py --url http://127.0.0.1:8000 --pid PID

Each client sends streamed requests back to back, chat or completions at random, with n 1 or 2, 4 to 48
tokens, and now and then a stop string, logprobs, ignore_eos or a usage chunk. The leaving clients close
their connection after a random number of chunks. The checks:

  - no response has a 5xx status, and no stream is cut by the server;
  - every stream read to its end is well formed: each event is `data: {json}`, one id and object kind
    throughout, every choice starts (chat: with the assistant role) and ends exactly once with a finish
    reason, `data: [DONE]` comes last, the usage chunk (when asked) comes last with consistent counts
    (exactly n x max_tokens generated when eos is ignored);
  - once the clients stop, nothing runs, waits or holds a KV block;
  - the server's resident memory, sampled every second, is flat: the mean of the last quarter of the
    samples is within --rss-tolerance of the mean of the second quarter (the first quarter warms up).

Needs aiohttp and psutil (pip install -e '.[test]'). The last line is `soak: ...`; the exit status is 1 if
a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import psutil
from serve_client import Server, Timed, stream

STOPS = [".", " the", "\n", "e"]


def request(rng: random.Random, model: str) -> tuple[str, dict]:
    """A random request: (path, payload)."""
    payload = {"model": model, "max_tokens": rng.randint(4, 48), "n": rng.choice([1, 1, 1, 2]),
               "temperature": rng.choice([0, 0.7, 1.0]), "seed": rng.randrange(1000)}
    if rng.random() < 0.5:
        payload["ignore_eos"] = True
    elif rng.random() < 0.3:
        payload["stop"] = rng.sample(STOPS, rng.randint(1, 2))
    if rng.random() < 0.5:
        payload["stream_options"] = {"include_usage": True}
    if rng.random() < 0.5:
        words = " ".join(rng.choice(["the", "cat", "sat", "on", "a", "mat", "and", "ran"]) for _ in range(40))
        return "/v1/chat/completions", payload | {
            "messages": [{"role": "user", "content": words[:rng.randint(5, len(words))]}],
            **({"logprobs": True, "top_logprobs": 2} if rng.random() < 0.2 else {})}
    return "/v1/completions", payload | {"prompt": [rng.randrange(16, 256) for _ in range(rng.randint(1, 200))],
                                         **({"logprobs": 1} if rng.random() < 0.2 else {})}


def problem(path: str, payload: dict, timed: Timed) -> str | None:
    """What is wrong with a stream read to its end, or None."""
    chat = path.endswith("chat/completions")
    n, chunks = payload["n"], timed.chunks
    if not timed.done:
        return "no data: [DONE] at the end"
    if {c["id"] for c in chunks} != {chunks[0]["id"]}:
        return "more than one id"
    if {c["object"] for c in chunks} != {"chat.completion.chunk" if chat else "text_completion"}:
        return f"objects {sorted({c['object'] for c in chunks})}"
    choice_chunks = [choice for c in chunks for choice in c["choices"]]
    ends = Counter(choice["index"] for choice in choice_chunks if choice["finish_reason"])
    if ends != Counter(range(n)):
        return f"finish reasons per choice {dict(ends)} for n={n}"
    if chat and {ch["index"] for ch in choice_chunks if ch["delta"].get("role") == "assistant"} != set(range(n)):
        return "a chat choice without its role chunk"
    reasons = {choice["finish_reason"] for choice in choice_chunks if choice["finish_reason"]}
    if not reasons <= {"stop", "length"}:
        return f"finish reasons {reasons}"
    if "stream_options" not in payload:
        return "a usage chunk nobody asked for" if any("usage" in c for c in chunks) else None
    *body, last = chunks
    usage = last.get("usage")
    if last["choices"] or not usage or any(c["usage"] is not None for c in body):
        return "usage is not the last chunk alone"
    if usage["total_tokens"] != usage["prompt_tokens"] + usage["completion_tokens"] or usage["prompt_tokens"] < 1:
        return f"inconsistent usage {usage}"
    most = n * payload["max_tokens"]
    if usage["completion_tokens"] > most or (payload.get("ignore_eos") and usage["completion_tokens"] != most):
        return f"{usage['completion_tokens']} tokens generated for n={n}, max_tokens={payload['max_tokens']}"
    return None


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.finished = self.left = self.cut = 0
        self.problems: Counter[str] = Counter()


async def client(index: int, leaves: bool, server: Server, model: str, deadline: float, tally: Tally,
                 session: aiohttp.ClientSession) -> None:
    rng = random.Random(index)
    while time.monotonic() < deadline:
        path, payload = request(rng, model)
        leave_after = rng.randint(1, 12) if leaves else None
        try:
            timed = await stream(session, server, path, payload, leave_after)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            tally.cut += 1
            tally.problems[f"stream cut: {type(exc).__name__}"] += 1
            continue
        tally.statuses[timed.status] += 1
        if timed.status != 200:
            continue
        if leave_after is not None and not timed.done:
            tally.left += 1
            continue
        tally.finished += 1
        if (wrong := problem(path, payload, timed)) is not None:
            tally.problems[wrong] += 1


async def sample_rss(pid: int, until: float, samples: list[float]) -> None:
    process = psutil.Process(pid)
    while time.monotonic() < until:
        samples.append(process.memory_info().rss / 2**20)
        await asyncio.sleep(1)


async def soak(server: Server, model: str, args: argparse.Namespace, rss: list[float]) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + args.seconds
    leavers = round(args.clients * args.leavers)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        sampler = asyncio.create_task(sample_rss(args.pid or server.pid, deadline, rss)) \
            if (args.pid or server.pid) else None
        await asyncio.gather(*(client(i, i < leavers, server, model, deadline, tally, session)
                               for i in range(args.clients)))
        if sampler:
            await sampler
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="a run directory: start `scratchlm serve` on it here")
    where.add_argument("--url", help="a server already running")
    parser.add_argument("--api-key", help="for --url")
    parser.add_argument("--pid", type=int, help="the process id of the server at --url, to sample its memory")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--leavers", type=float, default=0.25, help="the share of clients that leave mid-stream")
    parser.add_argument("--rss-tolerance", type=float, default=0.05)
    args = parser.parse_args()

    if args.run:
        server = Server.start(args.run, [], Path(tempfile.mkdtemp(prefix="scratchlm-soak-")) / "serve.log")
    else:
        server = Server(args.url, args.api_key)
    model = server.model()["id"]
    print(f"soak: {args.clients} clients ({round(args.clients * args.leavers)} leaving mid-stream) for "
          f"{args.seconds:.0f} s against {server.url}", flush=True)
    rss: list[float] = []
    start = time.monotonic()
    tally = asyncio.run(soak(server, model, args, rss))
    elapsed = time.monotonic() - start
    idle = server.wait_idle()
    status = server.stop()

    requests = sum(tally.statuses.values())
    errors = sum(count for code, count in tally.statuses.items() if code >= 500)
    print(f"{requests} responses in {elapsed:.0f} s ({requests / elapsed:.1f}/s): statuses {dict(tally.statuses)}; "
          f"{tally.finished} read to the end, {tally.left} left by their client, {tally.cut} cut")
    for wrong, count in tally.problems.most_common():
        print(f"  malformed x{count}: {wrong}")
    print(f"after the clients: {idle}")
    growth = float("nan")
    if len(rss) >= 8:
        quarter = len(rss) // 4
        early, late = statistics.mean(rss[quarter:2 * quarter]), statistics.mean(rss[-quarter:])
        growth = late / early - 1
        print(f"server RSS (MiB) every second: first {rss[0]:.0f}, min {min(rss):.0f}, max {max(rss):.0f}, last "
              f"{rss[-1]:.0f}; second quarter's mean {early:.1f}, last quarter's {late:.1f} ({growth:+.2%})")
    if status is not None:
        print(f"server stopped with SIGTERM: exit status {status}")
    failed = (errors > 0 or tally.cut > 0 or sum(tally.problems.values()) > 0 or idle["running"] > 0
              or idle["kv_blocks_in_use"] > 0 or abs(growth) > args.rss_tolerance or status not in (None, 0))
    print(f"soak: responses {requests} status_5xx {errors} cut {tally.cut} malformed {sum(tally.problems.values())} "
          f"read_to_end {tally.finished} left {tally.left} running_end {idle['running']} kv_blocks_end "
          f"{idle['kv_blocks_in_use']} rss_growth {growth:+.2%} {'FAIL' if failed else 'ok'}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
