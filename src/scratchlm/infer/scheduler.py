"""Which sequences run in the next engine step, and the blocks they hold.

    waiting  (first come, first served) --admit: its blocks fit--> running --finish / abort--> gone
                              ^                                        |
                              +--------- preempt: out of blocks -------+

A sequence's tokens are its prompt and what it has generated so far; `num_computed` of them have
keys and values in the cache. Each step computes what remains: one token for most (the last sampled,
a decode step), a chunk of the prompt for the newly admitted (prefill), and, like a prompt, the last
sampled token with the tokens a tool fed after it (infer/tools.py). Decoding and prefill run as
separate forwards, because a batch pads every row to its longest.

Admission takes the longest cached prefix of the sequence's tokens from the prefix cache and new
blocks for the rest of them; it waits while those do not fit. Running sequences grow a block every
block_size tokens (several at once when a tool feeds them many); when none is left, the most recently
admitted sequence is preempted: it gives its blocks back (its full ones stay in the prefix cache) and
goes back to the front of the queue, to be recomputed from its tokens later (its seed's generator
keeps its place, so its samples do not change).
"""

from __future__ import annotations

from collections import Counter, deque

import torch

from scratchlm.infer.detokenize import OutputText
from scratchlm.infer.kv_cache import BlockPool, block_hash
from scratchlm.infer.sampling import SamplingParams


class Sequence:
    """One request's state: its tokens, its block table, what it generated and why it stopped."""

    def __init__(self, request_id: str, prompt: list[int], params: SamplingParams, budget: int,
                 stop_ids: frozenset[int], generator: torch.Generator | None, text: OutputText | None) -> None:
        self.request_id = request_id
        self.params = params
        self.tokens = list(prompt)
        self.prompt_len = len(prompt)
        self.budget = budget  # most tokens it may generate: max_new_tokens, or what the context leaves
        self.stop_ids = stop_ids
        self.generator = generator
        self.text = text
        self.blocks: list[int] = []  # the block table
        self.num_computed = 0  # tokens whose keys and values are in the cache
        self.num_registered = 0  # leading full blocks findable in the prefix cache
        self.hashes: list[bytes] = []  # names of the leading full blocks of tokens, as far as computed
        self.cached_tokens = 0  # prompt tokens the prefix cache supplied at first admission
        self.admitted = False
        self.promised = 0  # full blocks of tokens (from num_registered on) that this sequence is computing
        self.slots: torch.Tensor | None = None  # the cache slot of each position, kept by the engine
        self.slots_filled = 0  # blocks of the table written into slots

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def to_compute(self) -> int:
        return len(self.tokens) - self.num_computed

    def block_hash(self, index: int, block_size: int) -> bytes:
        """The name of full block `index` of the tokens (block_size tokens from index * block_size)."""
        while len(self.hashes) <= index:
            i = len(self.hashes)
            parent = self.hashes[-1] if self.hashes else b""
            self.hashes.append(block_hash(parent, self.tokens[i * block_size:(i + 1) * block_size]))
        return self.hashes[index]


class Scheduler:
    def __init__(self, pool: BlockPool, block_size: int, max_running: int, max_prefill_tokens: int) -> None:
        self.pool = pool
        self.block_size = block_size
        self.max_running = max_running
        self.max_prefill_tokens = max_prefill_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0
        self.cached_tokens = 0  # prompt tokens the prefix cache supplied, over all first admissions
        self.computing: Counter[bytes] = Counter()  # full blocks that running sequences are prefilling

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """A finished or aborted sequence leaves; its blocks go back to the pool at once."""
        if seq in self.running:
            self.running.remove(seq)
            self._give_back(seq)
        else:
            self.waiting.remove(seq)

    def schedule(self) -> tuple[list[Sequence], list[tuple[Sequence, int]]]:
        """The next step's work: the sequences that decode one token, and (sequence, tokens) prefill chunks."""
        for seq in list(self.running):
            if seq.blocks:  # (a sequence preempted meanwhile holds no blocks)
                self._make_room(seq)
        self._admit()
        decode = [s for s in self.running if s.to_compute == 1]
        return decode, self._prefill_chunks()

    def register_full_blocks(self, seq: Sequence) -> None:
        """After a forward: make the sequence's newly completed blocks findable by later prompts."""
        while seq.num_registered < seq.num_computed // self.block_size:
            i = seq.num_registered
            h = seq.block_hash(i, self.block_size)
            self.pool.register(seq.blocks[i], h)
            if i < seq.promised:
                self._computed(h)
            seq.num_registered += 1

    def _make_room(self, seq: Sequence) -> None:
        """Give a running sequence the blocks its tokens need (a decoding sequence one more every block_size
        tokens; one that a tool fed tokens may need several), preempting the latest admitted when the pool
        is empty (possibly itself). A lone sequence always fits: the engine refuses requests whose tokens
        could outgrow the whole pool."""
        while len(seq.blocks) * self.block_size < len(seq.tokens):
            while self.pool.available == 0:
                victim = self.running[-1]
                self._preempt(victim)
                if victim is seq:
                    return
            seq.blocks.append(self.pool.allocate())

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._give_back(seq)
        seq.num_computed, seq.num_registered = 0, 0
        self.waiting.appendleft(seq)
        self.preemptions += 1

    def _give_back(self, seq: Sequence) -> None:
        for i in range(seq.num_registered, seq.promised):  # promises it will not keep
            self._computed(seq.block_hash(i, self.block_size))
        self.pool.release(seq.blocks)
        seq.blocks, seq.promised, seq.slots_filled = [], 0, 0

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_running:
            seq = self.waiting[0]
            hits = self._cached_prefix(seq)
            if self._being_computed(seq, len(hits)):
                return  # a running sequence is prefilling this prompt's next block: share it next step
            needed = -(-len(seq.tokens) // self.block_size) - len(hits)
            revived = sum(1 for b in hits if self.pool.refs[b] == 0)  # cached blocks nobody holds count as free
            # Keep a block per running sequence in hand, so admitting does not force a preemption next step.
            if needed + revived > self.pool.available - len(self.running):
                return
            self.waiting.popleft()
            for block in hits:  # before allocating, which could otherwise evict them
                self.pool.acquire(block)
            seq.blocks = hits + [self.pool.allocate() for _ in range(needed)]
            seq.num_computed, seq.num_registered = len(hits) * self.block_size, len(hits)
            seq.promised = len(seq.tokens) // self.block_size
            for i in range(len(hits), seq.promised):
                self.computing[seq.block_hash(i, self.block_size)] += 1
            if not seq.admitted:
                seq.cached_tokens, seq.admitted = seq.num_computed, True
                self.cached_tokens += seq.cached_tokens
            self.running.append(seq)

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Blocks of the longest cached prefix of the tokens, leaving at least the last token to compute
        (its logits give the next token)."""
        hits = []
        for i in range((len(seq.tokens) - 1) // self.block_size):
            block = self.pool.cached(seq.block_hash(i, self.block_size))
            if block is None:
                break
            hits.append(block)
        return hits

    def _computed(self, h: bytes) -> None:
        self.computing[h] -= 1
        if not self.computing[h]:
            del self.computing[h]

    def _being_computed(self, seq: Sequence, cached_blocks: int) -> bool:
        """Whether the block after the cached prefix is one that a running sequence is computing now (the
        samples of one prompt, submitted together): waiting a step for it beats computing it twice."""
        if cached_blocks >= (len(seq.tokens) - 1) // self.block_size:
            return False
        return seq.block_hash(cached_blocks, self.block_size) in self.computing

    def _prefill_chunks(self) -> list[tuple[Sequence, int]]:
        """Sequences with more than one token to compute, in admission order, as (sequence, chunk) rows
        whose padded batch (rows x longest chunk) stays within max_prefill_tokens. A prompt longer than
        that is prefilled a chunk per step."""
        rows: list[tuple[Sequence, int]] = []
        width = 0
        for seq in self.running:
            if seq.to_compute <= 1:
                continue
            chunk = min(seq.to_compute, self.max_prefill_tokens)
            if (len(rows) + 1) * max(width, chunk) > self.max_prefill_tokens:
                break
            rows.append((seq, chunk))
            width = max(width, chunk)
        return rows
