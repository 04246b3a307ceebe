"""The scheduler alone: admission, prefill chunks, preemption and prefix sharing, with computing simulated."""

from scratchlm.infer.kv_cache import BlockPool
from scratchlm.infer.sampling import SamplingParams
from scratchlm.infer.scheduler import Scheduler, Sequence

BLOCK = 4


def seq(name: str, prompt: list[int]) -> Sequence:
    return Sequence(name, prompt, SamplingParams(), budget=100, stop_ids=frozenset(), generator=None, text=None)


def compute(scheduler: Scheduler, rows: list[tuple[Sequence, int]]) -> None:
    """What a forward does to the scheduler's state: tokens computed, full blocks registered, a token
    sampled after the last one."""
    for s, n in rows:
        s.num_computed += n
        scheduler.register_full_blocks(s)
        if s.to_compute == 0:
            s.tokens.append(1)


def test_a_long_prompt_is_prefilled_in_chunks_then_decodes():
    scheduler = Scheduler(BlockPool(20), BLOCK, max_running=4, max_prefill_tokens=10)
    a = seq("a", list(range(25)))
    scheduler.add(a)
    chunks = []
    for _ in range(4):
        decode, prefill = scheduler.schedule()
        chunks.append(([s.request_id for s in decode], [n for _, n in prefill]))
        compute(scheduler, [(s, 1) for s in decode] + prefill)
    assert chunks == [([], [10]), ([], [10]), ([], [5]), (["a"], [])]


def test_a_prefill_batch_stays_within_its_padded_token_budget():
    scheduler = Scheduler(BlockPool(30), BLOCK, max_running=8, max_prefill_tokens=16)
    for name, n in (("a", 6), ("b", 3), ("c", 8)):
        scheduler.add(seq(name, list(range(n))))
    _, prefill = scheduler.schedule()
    assert [(s.request_id, n) for s, n in prefill] == [("a", 6), ("b", 3)]  # c would pad three rows to 8: 24


def test_admission_waits_first_come_first_served_while_blocks_are_short():
    scheduler = Scheduler(BlockPool(6), BLOCK, max_running=8, max_prefill_tokens=64)  # 5 usable blocks
    big, small = seq("big", list(range(20))), seq("small", list(range(3)))
    scheduler.add(seq("first", list(range(8))))  # 2 blocks
    scheduler.add(big)  # 5 blocks: does not fit beside the first
    scheduler.add(small)  # would fit, but does not overtake
    scheduler.schedule()
    assert [s.request_id for s in scheduler.running] == ["first"] and list(scheduler.waiting) == [big, small]


def test_out_of_blocks_the_latest_admitted_is_preempted_and_queued_first():
    scheduler = Scheduler(BlockPool(5), BLOCK, max_running=8, max_prefill_tokens=64)  # 4 usable blocks
    a, b = seq("a", list(range(7))), seq("b", list(range(100, 104)))
    scheduler.add(a)
    scheduler.add(b)
    decode, prefill = scheduler.schedule()
    assert scheduler.running == [a, b] and scheduler.pool.available == 1
    compute(scheduler, prefill)  # a: 7 tokens + 1 sampled (2 blocks); b: 4 + 1 (1 block, then a second)
    decode, _ = scheduler.schedule()  # b needs a block for its 5th token: the last one free
    compute(scheduler, [(s, 1) for s in decode])
    decode, _ = scheduler.schedule()  # a needs a third block for its 9th token: none left, b goes
    assert scheduler.preemptions == 1 and list(scheduler.waiting) == [b] and decode == [a]
    assert b.blocks == [] and b.num_computed == 0 and len(a.blocks) == 3
    assert scheduler.pool.cached(b.block_hash(0, BLOCK)) is not None  # b's full block stays findable


def test_the_samples_of_one_prompt_wait_a_step_and_share_its_blocks():
    scheduler = Scheduler(BlockPool(20), BLOCK, max_running=8, max_prefill_tokens=64)
    samples = [seq(f"s{i}", list(range(10))) for i in range(3)]  # two full blocks, then 2 tokens
    for s in samples:
        scheduler.add(s)
    _, prefill = scheduler.schedule()
    assert [s for s, _ in prefill] == samples[:1] and len(scheduler.waiting) == 2
    compute(scheduler, prefill)
    _, prefill = scheduler.schedule()
    assert [(s.request_id, n) for s, n in prefill] == [("s1", 2), ("s2", 2)]
    assert samples[1].blocks[:2] == samples[2].blocks[:2] == samples[0].blocks[:2]
    assert scheduler.cached_tokens == 16 and not scheduler.computing
