"""The engine thread serving asyncio clients: streams, aborts, refusals, shutdown and failures."""

import asyncio

import pytest

from scratchlm.errors import ScratchError
from scratchlm.infer.async_engine import AsyncEngine
from scratchlm.infer.engine import Completion, Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.model import build_model

from conftest import small_model_config

PROMPTS = [[5, 17, 42], list(range(1, 30)), [7] * 11, [250, 3]]


@pytest.fixture(scope="module")
def model():
    return build_model(small_model_config(), seed=0).eval()


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0)


async def collect(handle) -> Completion:
    done = Completion(handle.request_id)
    async for out in handle:
        done.add(out)
    return done


def test_concurrent_streams_get_what_the_engine_generates(model):
    want = Engine(model).generate(PROMPTS, greedy(15))

    async def main():
        served = AsyncEngine(Engine(model, block_size=4))
        served.start()
        got = await asyncio.gather(*(collect(served.submit(p, greedy(15))) for p in PROMPTS))
        metrics = served.metrics()
        served.stop()
        return got, metrics

    got, metrics = asyncio.run(main())
    assert [c.token_ids for c in got] == [c.token_ids for c in want]
    assert all(c.finish_reason == "length" for c in got)
    assert metrics.running == metrics.waiting == metrics.blocks_in_use == 0 and metrics.generated_tokens == 60


def test_abort_mid_stream_ends_the_stream_and_frees_its_blocks(model):
    async def main():
        served = AsyncEngine(Engine(model, block_size=4))
        served.start()
        other = asyncio.create_task(collect(served.submit([1, 2, 3], greedy(40))))
        handle = served.submit(list(range(1, 30)), greedy(30))
        outputs = []
        async for out in handle:
            outputs.append(out)
            if len(outputs) == 3:
                in_use = served.metrics().blocks_in_use
                handle.abort()
        freed = served.metrics()
        finished_other = await other
        served.stop()
        return outputs, in_use, freed, finished_other

    outputs, in_use, freed, other = asyncio.run(main())
    assert outputs[-1].finish_reason == "abort" and len(outputs) < 30  # ended long before its budget of 30
    assert freed.blocks_in_use < in_use and freed.running <= 1
    assert other.finish_reason == "length" and len(other.token_ids) == 40


def test_bad_input_is_refused_at_submit(model):
    async def main():
        served = AsyncEngine(Engine(model))
        with pytest.raises(ScratchError, match="context"):
            served.submit(list(range(64)), greedy(1))
        assert served.metrics().waiting == 0

    asyncio.run(main())


def test_stop_aborts_what_still_runs(model):
    async def main():
        served = AsyncEngine(Engine(model))
        served.start()
        handles = [served.submit([1, 2], greedy(60)) for _ in range(3)]
        first = await anext(aiter(handles[0]))
        served.stop()
        rest = [await collect(h) for h in handles[1:]]
        return first, rest, served.engine.metrics()

    first, rest, metrics = asyncio.run(main())
    assert not first.finished and all(c.finish_reason == "abort" for c in rest)
    assert metrics.blocks_in_use == 0 and metrics.running == metrics.waiting == 0


def test_stop_with_drain_finishes_what_was_submitted_and_refuses_more(model):
    async def main():
        served = AsyncEngine(Engine(model))
        served.start()
        tasks = [asyncio.create_task(collect(served.submit([1, 2], greedy(20)))) for _ in range(3)]
        await asyncio.get_running_loop().run_in_executor(None, lambda: served.stop(drain=True))
        with pytest.raises(RuntimeError, match="stopping"):
            served.submit([1], greedy(1))
        return await asyncio.gather(*tasks)

    done = asyncio.run(main())
    assert all(c.finish_reason == "length" and len(c.token_ids) == 20 for c in done)


def test_a_failing_step_fails_every_request_instead_of_hanging(model):
    engine = Engine(model)

    def broken_step():
        raise RuntimeError("out of memory")

    engine.step = broken_step

    async def main():
        served = AsyncEngine(engine)
        served.start()
        handles = [served.submit([1, 2], greedy(5)) for _ in range(2)]
        errors = []
        for h in handles:
            with pytest.raises(RuntimeError, match="out of memory") as caught:
                await collect(h)
            errors.append(caught.value)
        served.stop()
        return errors, engine.metrics()

    errors, metrics = asyncio.run(main())
    assert len(errors) == 2 and metrics.running == metrics.waiting == metrics.blocks_in_use == 0
