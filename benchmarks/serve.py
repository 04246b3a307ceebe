"""Serving under load, in the manner of vLLM's benchmark_serving, against a running `scratchlm serve`.

1. Load: --num-prompts streamed completions of --input-len random token ids (sent as ids, so lengths are
   exact), each generating --output-len tokens (ignore_eos), sent at a fixed --concurrency or as a Poisson
   process of --request-rate requests/s. Reports request throughput, output tokens/s, time to first token
   (TTFT), inter-token latency (ITL: the gaps between streamed chunks) and time per output token (TPOT:
   (latency - TTFT) / (tokens - 1)), p50 and p99.
2. Prefix cache: TTFT of a request whose long prefix (three quarters of the model's context, at most 1,000
   tokens) is new, against the same prefix with another ending once it is cached. Medians over
   --prefix-rounds fresh prefixes, sent one at a time on an idle server, asking for one token each.

    python benchmarks/serve.py --run RUN_DIR [--serve-args "--max-running 32"]   # starts the server, stops it
    python benchmarks/serve.py --url http://127.0.0.1:8000 [--api-key KEY]        # one already running

Needs aiohttp (pip install -e '.[test]'). Random ids come from 16..255 (byte tokens in any byte-level
vocabulary). The last line is
`req_per_s: A out_tok_per_s: B ttft_p50_ms: C ttft_p99_ms: D itl_p50_ms: E itl_p99_ms: F prefix_ttft_speedup: G`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shlex
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from serve_client import Server, Timed, stream

from scratchlm.hardware import cpu_model

TOKEN_IDS = range(16, 256)


def random_ids(rng: random.Random, n: int) -> list[int]:
    return [rng.choice(TOKEN_IDS) for _ in range(n)]


async def load(server: Server, model: str, args: argparse.Namespace) -> tuple[list[Timed], float]:
    """Every request of the load phase, and the seconds from the first sent to the last finished."""
    rng = random.Random(args.seed)
    payloads = [{"model": model, "prompt": random_ids(rng, args.input_len), "max_tokens": args.output_len,
                 "ignore_eos": True, "temperature": 0, "stream_options": {"include_usage": True}}
                for _ in range(args.num_prompts)]
    limit = asyncio.Semaphore(args.concurrency or len(payloads))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:
        await stream(session, server, "/v1/completions", payloads[0] | {"max_tokens": 2})  # warm-up

        async def one(payload: dict) -> Timed:
            async with limit:
                return await stream(session, server, "/v1/completions", payload)

        start = time.perf_counter()
        tasks = []
        for payload in payloads:
            tasks.append(asyncio.create_task(one(payload)))
            if args.request_rate != float("inf"):
                await asyncio.sleep(rng.expovariate(args.request_rate))
        results = await asyncio.gather(*tasks)
        return results, time.perf_counter() - start


async def prefix_ttft(server: Server, model: str, context: int, rounds: int, seed: int) -> tuple[int, float, float]:
    """(prefix length, median TTFT with the prefix new, median TTFT with it cached)."""
    rng = random.Random(seed + 1)
    length = min(1000, 3 * context // 4)
    cold, warm = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        for _ in range(rounds + 1):  # the first round warms up
            prefix = random_ids(rng, length)
            times = []
            for _ in range(2):  # the same prefix twice, each time with another ending
                payload = {"model": model, "prompt": prefix + random_ids(rng, 8), "max_tokens": 1, "temperature": 0}
                timed = await stream(session, server, "/v1/completions", payload)
                assert timed.status == 200 and timed.ttft is not None, timed.error
                times.append(timed.ttft)
            cold.append(times[0])
            warm.append(times[1])
    return length, statistics.median(cold[1:]), statistics.median(warm[1:])


def percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    p50, p99 = np.percentile(np.array(values) * 1000, [50, 99]) if values else (float("nan"), float("nan"))
    return float(p50), float(p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="a run directory: start `scratchlm serve` on it here")
    where.add_argument("--url", help="a server already running, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", help="for --url")
    parser.add_argument("--serve-args", default="", help="more flags for the server started with --run")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at most (0: no limit)")
    parser.add_argument("--request-rate", type=float, default=float("inf"),
                        help="requests/s sent as a Poisson process (inf: all at once, as --concurrency allows)")
    parser.add_argument("--prefix-rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.run:
        log = Path(tempfile.mkdtemp(prefix="scratchlm-bench-")) / "serve.log"
        server = Server.start(args.run, shlex.split(args.serve_args), log)
    else:
        server = Server(args.url, args.api_key)
    card = server.model()
    model, context = card["id"], card["max_model_len"]
    if args.input_len + args.output_len > context:
        parser.error(f"--input-len + --output-len must fit the model's context of {context} tokens")
    print(f"{cpu_model()}; server {server.url}, model {model} (context {context}); {args.num_prompts} requests of "
          f"{args.input_len} + {args.output_len} tokens, concurrency {args.concurrency or 'unlimited'}, "
          f"rate {args.request_rate} req/s", flush=True)

    results, elapsed = asyncio.run(load(server, model, args))
    good = [r for r in results if r.status == 200 and r.done and r.usage]
    output_tokens = sum(r.usage["completion_tokens"] for r in good)
    ttft = [r.ttft for r in good]
    itl = [gap for r in good for gap in r.chunk_gaps]
    tpot = [(r.latency - r.ttft) / (r.usage["completion_tokens"] - 1) for r in good if r.usage["completion_tokens"] > 1]
    req_per_s, tok_per_s = len(good) / elapsed, output_tokens / elapsed
    print(f"successful requests {len(good)} of {len(results)}; {elapsed:.1f} s; {req_per_s:.2f} req/s; "
          f"output {tok_per_s:,.0f} tok/s; total {(output_tokens + len(good) * args.input_len) / elapsed:,.0f} tok/s")
    for name, values in (("TTFT", ttft), ("ITL", itl), ("TPOT", tpot)):
        p50, p99 = percentiles(values)
        print(f"  {name:<4} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms")

    server.wait_idle()
    hits_before = server.metric("scratchlm_prefix_cache_hit_tokens_total")
    length, cold, warm = asyncio.run(prefix_ttft(server, model, context, args.prefix_rounds, args.seed))
    hits_after = server.metric("scratchlm_prefix_cache_hit_tokens_total")
    supplied = "" if hits_before is None else (f"; the cache supplied {hits_after - hits_before:.0f} prompt tokens "
                                               f"over {args.prefix_rounds + 1} rounds")
    print(f"prefix cache: a {length}-token prefix, TTFT new {cold * 1000:.1f} ms, cached {warm * 1000:.1f} ms "
          f"({cold / warm:.1f}x){supplied}")
    status = server.stop()
    if status is not None:
        print(f"server stopped with SIGTERM: exit status {status}")
    ttft50, ttft99 = percentiles(ttft)
    itl50, itl99 = percentiles(itl)
    print(f"req_per_s: {req_per_s:.2f} out_tok_per_s: {tok_per_s:.0f} ttft_p50_ms: {ttft50:.1f} ttft_p99_ms: "
          f"{ttft99:.1f} itl_p50_ms: {itl50:.1f} itl_p99_ms: {itl99:.1f} prefix_ttft_speedup: {cold / warm:.1f}")


if __name__ == "__main__":
    main()
