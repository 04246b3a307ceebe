"""What the engine's tests share: greedy params, the full forward that the engine must equal, a driver that
adds requests at given steps, and the scenario of sequences joining and leaving at random steps."""

import random

import torch

from scratchlm.infer.engine import Completion, Engine
from scratchlm.infer.sampling import SamplingParams

VOCAB = 300


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0, **kw)


def full_forward(model, prompt: list[int], n: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens by a full forward over everything so far, one forward per token, and the
    log-probabilities of all of them from one last full forward."""
    tokens = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            tokens.append(int(model(torch.tensor([tokens]))[0, -1].argmax()))
        logprobs = model(torch.tensor([tokens]))[0].log_softmax(-1)
    new = tokens[len(prompt):]
    return new, logprobs[len(prompt) - 1:-1].gather(1, torch.tensor(new).unsqueeze(1)).squeeze(1)


def drive(engine: Engine, requests: list[tuple[int, list[int], SamplingParams]]) -> list[Completion]:
    """Add each (arrival step, prompt, params) at its step; step until all are done."""
    done: dict[str, Completion] = {}
    ids: list[str | None] = [None] * len(requests)
    step = 0
    while any(i is None for i in ids) or engine.has_work():
        for k, (arrival, prompt, params) in enumerate(requests):
            if arrival == step:
                ids[k] = engine.add_request(prompt, params)
                done[ids[k]] = Completion(ids[k])
        for out in engine.step():
            done[out.request_id].add(out)
        step += 1
    return [done[i] for i in ids]


def joining_and_leaving(seed: int = 0) -> list[tuple[int, list[int], SamplingParams]]:
    """Twelve greedy requests (arrival step, prompt, params): prompts of 1 to 15 tokens, half of them behind
    a shared 13-token prefix, arriving at random steps in 0..24 and leaving after 1 to 20 tokens."""
    rng = random.Random(seed)
    shared = [rng.randrange(VOCAB) for _ in range(13)]
    requests = []
    for i in range(12):
        prompt = (shared if i % 2 else []) + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 15))]
        requests.append((rng.randrange(25), prompt, greedy(rng.randint(1, 20))))
    return requests


def crowded_engine(model, **kw) -> Engine:
    """The engine of the joining-and-leaving scenario: five running at most, prompts prefilled in chunks."""
    return Engine(model, block_size=4, max_running=5, max_prefill_tokens=24, **kw)
