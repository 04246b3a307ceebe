"""The one generation engine: many sequences at once over a paged KV cache (docs/serving.md).

    add_request(prompt ids, SamplingParams) -> request id      (any number, any time)
    step() -> [RequestOutput]      admit what the cache allows, prefill it, decode one token for every
                                   running sequence; each output is one sequence's new token and text
    abort(request id)              the sequence leaves now and its blocks go back to the pool

`generate` (a batch of prompts to completions) and `stream` (one prompt, output by output) drive step()
for a caller that owns the engine; AsyncEngine (infer/async_engine.py) drives it from its own thread
for a server. One sequence is a batch of one.

Each step runs at most two forwards: one over the prefill chunks of newly admitted sequences, one over
every decoding sequence (a token each). A forward gets every token's position and an attention mask,
and the paged cache (infer/kv_cache.py) writes each new key to its sequence's blocks and gathers each
row's keys, padded to the longest row; the mask hides the padding. In fp32 the result is the full
forward's up to rounding: a greedy sequence's tokens are the same alone, in any batch, with or without
a cached prefix (tests/infer/test_engine.py), and its log-probabilities agree to about 1e-6 (matrix
products of other shapes round differently). With batch_invariant=True every forward runs under
infer/batch_invariant.py's mode, which computes each token alone: the log-probabilities are then bit for
bit the same alone, in any batch, and in a full forward under the same mode (slower; docs/serving.md).

Tools (SamplingParams.tools, infer/tools.py): when a sequence's text reaches a point where a tool answers
(the calculator: the text ends with "<<expression="), the tool's text is encoded and appended after the
sampled token as forced tokens. They are computed in the next step together with that token, as a
prefill chunk, so they enter the KV cache exactly as if they had been in the prompt; they are flagged in
RequestOutput.forced, with log-probability 0.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from scratchlm.errors import ScratchError
from scratchlm.infer import tools
from scratchlm.infer.batch_invariant import batch_invariant
from scratchlm.infer.detokenize import OutputText
from scratchlm.infer.kv_cache import TRASH_BLOCK, BlockPool, PagedKVCache
from scratchlm.infer.sampling import SamplingParams, sample
from scratchlm.infer.scheduler import Scheduler
from scratchlm.infer.scheduler import Sequence as Seq
from scratchlm.model import Transformer
from scratchlm.tokenizer import BPETokenizer

# The default KV pool's ceiling: a long-context model (an imported Llama's 131,072 tokens) times 64
# sequences would ask for hundreds of GB; serve such a model with an explicit cache_tokens.
DEFAULT_CACHE_BYTES = 2**30


@dataclass
class RequestOutput:
    """What one step added to one request. Text may lag its tokens: an unfinished character, or a tail
    that may still become a stop string, waits for the next piece."""

    request_id: str
    token_ids: list[int]  # the stop token that ended a sequence is here too (RL trains on it), not in the text
    logprobs: list[float]  # of each token, under the model's distribution (temperature 1, no top-k/top-p)
    top_logprobs: list[list[tuple[int, float]]]  # per token: SamplingParams.top_logprobs (id, logprob) pairs
    text: str = ""  # empty when the engine has no tokenizer
    finished: bool = False
    finish_reason: str | None = None  # "stop" (a stop token or string), "length" (token budget), "abort"
    stop_reason: int | str | None = None  # the stop token id or stop string that ended it
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose prefill the prefix cache saved
    output_tokens: int = 0  # generated so far
    # per token: fed by a tool (SamplingParams.tools) rather than sampled; its logprob is 0 (it was certain),
    # its top_logprobs entry is empty, and RL leaves it out of its loss
    forced: list[bool] = field(default_factory=list)


@dataclass
class Completion:
    """A request's outputs put together."""

    request_id: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    forced: list[bool] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def add(self, out: RequestOutput) -> None:
        self.token_ids += out.token_ids
        self.logprobs += out.logprobs
        self.top_logprobs += out.top_logprobs
        self.forced += out.forced
        self.text += out.text
        self.finish_reason, self.stop_reason = out.finish_reason, out.stop_reason
        self.prompt_tokens, self.cached_tokens = out.prompt_tokens, out.cached_tokens


@dataclass(frozen=True)
class EngineMetrics:
    running: int
    waiting: int
    blocks_in_use: int  # held by running sequences
    blocks_total: int
    blocks_cached: int  # held by nobody, keeping a prefix findable until evicted
    prompt_tokens: int  # totals since the engine started
    cached_tokens: int
    prefilled_tokens: int  # tokens computed by prefill forwards (prompts less their cached prefixes; tool output)
    generated_tokens: int  # sampled (tokens that tools fed are not counted)
    preemptions: int


class Engine:
    """Runs the model in its parameters' dtype; the KV cache takes the same dtype.

    stop_ids end every sequence (a chat format's end-of-turn; scratchlm.chat supplies an imported
    model's). tokenizer: needed for text outputs and stop strings. max_running: sequences decoded
    together at most. cache_tokens: the KV pool's capacity (default: max_running full contexts, up to
    DEFAULT_CACHE_BYTES of keys and values).
    max_prefill_tokens: padded tokens per prefill forward (a longer prompt is prefilled in chunks).
    batch_invariant: compute every token alone (infer/batch_invariant.py), so that a sequence's logits are
    bit for bit the same whatever shares its batch; slower.
    """

    def __init__(self, model: Transformer, stop_ids: Iterable[int] = (), tokenizer: BPETokenizer | None = None,
                 *, max_running: int = 64, cache_tokens: int | None = None, block_size: int = 16,
                 max_prefill_tokens: int = 1024, batch_invariant: bool = False) -> None:
        if min(max_running, block_size, max_prefill_tokens) < 1 or (cache_tokens is not None and cache_tokens < 1):
            raise ScratchError("max_running, block_size, max_prefill_tokens and cache_tokens must be positive")
        self.model = model.eval()
        self.batch_invariant = batch_invariant
        self.stop_ids = frozenset(stop_ids)
        self.tokenizer = tokenizer
        cfg = model.cfg
        param = next(model.parameters())
        self.device = param.device
        self.block_size = block_size
        if cache_tokens is None:
            bytes_per_token = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * param.element_size()
            cache_tokens = min(max_running * cfg.max_seq_len, DEFAULT_CACHE_BYTES // bytes_per_token)
        num_blocks = -(-cache_tokens // block_size) + 1  # + the trash block
        self.pool = BlockPool(num_blocks)
        self.cache = PagedKVCache(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, num_blocks, block_size, param.dtype,
                                  self.device)
        self.scheduler = Scheduler(self.pool, block_size, max_running, max_prefill_tokens)
        self._block_offsets = torch.arange(block_size, device=self.device)
        self._key_positions = torch.arange(cfg.max_seq_len, device=self.device)
        self.sequences: dict[str, Seq] = {}
        self._ids = itertools.count()
        self.prompt_tokens = self.prefilled_tokens = self.generated_tokens = 0

    @property
    def context_len(self) -> int:
        return self.model.cfg.max_seq_len

    @property
    def capacity(self) -> int:
        """Tokens the KV pool holds."""
        return self.pool.usable * self.block_size

    def check(self, prompt: Sequence[int], params: SamplingParams) -> None:
        """Refuse a request the engine cannot serve, with one line that says why (safe from any thread)."""
        params.check()
        if not prompt:
            raise ScratchError("the prompt is empty; give at least one token")
        vocab = self.model.cfg.vocab_size
        if not all(0 <= t < vocab for t in prompt):
            bad = next(t for t in prompt if not 0 <= t < vocab)
            raise ScratchError(f"the prompt holds token id {bad}, outside the model's vocabulary 0..{vocab - 1}")
        if len(prompt) >= self.context_len:
            raise ScratchError(f"the prompt is {len(prompt)} tokens, but the model's context is {self.context_len}; "
                               "shorten the prompt")
        if params.stop and self.tokenizer is None:
            raise ScratchError("stop strings need an engine with a tokenizer")
        if params.tools and self.tokenizer is None:
            raise ScratchError("tools need an engine with a tokenizer: they read the text and feed text back")
        needed = len(prompt) + self.budget(len(prompt), params)
        if needed > self.capacity:
            raise ScratchError(f"the prompt and max_new_tokens need {needed} tokens of KV cache, but it holds "
                               f"{self.capacity}; lower max_new_tokens or build the engine with more cache_tokens")

    def budget(self, prompt_len: int, params: SamplingParams) -> int:
        return min(params.max_new_tokens, self.context_len - prompt_len)

    def add_request(self, prompt: Sequence[int], params: SamplingParams, request_id: str | None = None) -> str:
        self.check(prompt, params)
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self.sequences:
            raise ScratchError(f"request id {request_id} is already in the engine")
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        text = None
        if self.tokenizer is not None:
            text = OutputText(self.tokenizer.tok, list(prompt), params.stop, params.skip_special_tokens)
        seq = Seq(request_id, list(prompt), params, self.budget(len(prompt), params),
                  self.stop_ids | frozenset(params.stop_token_ids), generator, text)
        self.sequences[request_id] = seq
        self.scheduler.add(seq)
        self.prompt_tokens += len(prompt)
        return request_id

    def abort(self, request_id: str) -> RequestOutput | None:
        """End a request now and free its blocks; None if it already finished (or never was)."""
        seq = self.sequences.pop(request_id, None)
        if seq is None:
            return None
        self.scheduler.remove(seq)
        return self._output(seq, [], [], [], "", "abort", None, [])

    def has_work(self) -> bool:
        return bool(self.sequences)

    def metrics(self) -> EngineMetrics:
        return EngineMetrics(
            running=len(self.scheduler.running), waiting=len(self.scheduler.waiting),
            blocks_in_use=self.pool.in_use, blocks_total=self.pool.usable, blocks_cached=len(self.pool.evictable),
            prompt_tokens=self.prompt_tokens, cached_tokens=self.scheduler.cached_tokens,
            prefilled_tokens=self.prefilled_tokens, generated_tokens=self.generated_tokens,
            preemptions=self.scheduler.preemptions)

    @torch.inference_mode()
    def step(self) -> list[RequestOutput]:
        decode, prefill = self.scheduler.schedule()
        outputs = []
        if prefill:
            self.prefilled_tokens += sum(n for _, n in prefill)
            outputs += self._forward(prefill)
        if decode:
            outputs += self._forward([(s, 1) for s in decode])
        return outputs

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | Sequence[SamplingParams]
                 ) -> list[Completion]:
        """Complete every prompt (all in one batch, as memory allows)."""
        self._check_idle()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
        done = {i: Completion(i) for i in ids}
        while any(i in self.sequences for i in ids):
            for out in self.step():
                done[out.request_id].add(out)
        return [done[i] for i in ids]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[RequestOutput]:
        """One request's outputs as they come; closing the iterator early aborts the request."""
        self._check_idle()
        request_id = self.add_request(prompt, params)
        try:
            while request_id in self.sequences:
                yield from (out for out in self.step() if out.request_id == request_id)
        finally:
            self.abort(request_id)

    def _check_idle(self) -> None:
        """generate and stream step the whole engine and keep only their own outputs: other requests'
        would be lost. Clients that share an engine go through AsyncEngine."""
        if self.sequences:
            raise RuntimeError(f"the engine already runs {len(self.sequences)} other request(s); generate and "
                               "stream need it to themselves (share an engine through AsyncEngine)")

    def _forward(self, rows: list[tuple[Seq, int]]) -> list[RequestOutput]:
        """Compute the next n tokens of each (sequence, n) row in one forward; sample after the rows that
        reach their last token."""
        tokens = self._inputs(rows)
        with batch_invariant() if self.batch_invariant else contextlib.nullcontext():
            logits = self.model(tokens, cache=self.cache, **self._placement(rows))
        finished_rows = []
        for i, (seq, n) in enumerate(rows):
            seq.num_computed += n
            self.scheduler.register_full_blocks(seq)
            if seq.to_compute == 0:
                finished_rows.append((i, n - 1))
        if not finished_rows:
            return []
        index = torch.tensor(finished_rows, device=self.device)
        seqs = [rows[i][0] for i, _ in finished_rows]
        sampled = sample(logits[index[:, 0], index[:, 1]], [s.params for s in seqs], [s.generator for s in seqs])
        return [self._append(seq, token, logprob, top)
                for seq, token, logprob, top in zip(seqs, sampled.tokens, sampled.logprobs, sampled.top, strict=True)]

    def _inputs(self, rows: list[tuple[Seq, int]]) -> torch.Tensor:
        """Token ids (rows, width): row i holds its tokens start_i .. start_i + n_i - 1, padded to the widest
        row. Tells the cache where each new token's keys go (padding: the trash block) and which slots each
        row reads: its keys 0 .. start_i + n_i - 1, padded to the longest row with trash slots."""
        bs = self.block_size
        width = max(n for _, n in rows)
        keys = max(s.num_computed + n for s, n in rows)
        tokens, write = [], []
        for seq, n in rows:
            start = seq.num_computed
            tokens.append(seq.tokens[start:start + n] + [0] * (width - n))
            write += [seq.blocks[p // bs] * bs + p % bs for p in range(start, start + n)]
            write += [TRASH_BLOCK * bs] * (width - n)
        if len(rows) == 1:
            read = self._slots(rows[0][0])[:keys].unsqueeze(0)
        else:
            read = torch.stack([self._slots(seq)[:keys] for seq, _ in rows])
        self.cache.set_step(torch.tensor(write, device=self.device), read)
        return torch.tensor(tokens, device=self.device)

    def _slots(self, seq: Seq) -> torch.Tensor:
        """The cache slot of each of the sequence's positions, written as its blocks arrive (a tensor kept
        with the sequence, so a step reads its slots without rebuilding them). Positions past its blocks
        read the trash block's slot 0, or a stale slot: the mask hides both."""
        bs = self.block_size
        if seq.slots is None:
            seq.slots = torch.zeros(-(-self.context_len // bs) * bs, dtype=torch.long, device=self.device)
        for b in range(seq.slots_filled, len(seq.blocks)):
            seq.slots[b * bs:(b + 1) * bs] = seq.blocks[b] * bs + self._block_offsets
        seq.slots_filled = len(seq.blocks)
        return seq.slots

    def _placement(self, rows: list[tuple[Seq, int]]) -> dict[str, int | torch.Tensor]:
        """Where the rows' tokens sit, as the model takes it. Rows that all start at one position with
        as many tokens (one sequence; the samples of one prompt in step) need no mask: the model's own
        causal attention over the cache is theirs. Otherwise every token's position, and a mask that lets
        it see its row's keys up to itself; a padding token sits at position 0 and sees one key (a row
        of nothing but masked keys would give NaNs)."""
        first, n = rows[0][0].num_computed, rows[0][1]
        if all(s.num_computed == first and m == n for s, m in rows):
            return {"start_pos": first}
        width = max(m for _, m in rows)
        keys = max(s.num_computed + m for s, m in rows)
        positions = torch.tensor([list(range(s.num_computed, s.num_computed + m)) + [0] * (width - m)
                                  for s, m in rows], device=self.device)
        mask = self._key_positions[:keys] <= positions.unsqueeze(2)
        return {"positions": positions, "mask": mask.unsqueeze(1)}

    def _append(self, seq: Seq, token: int, logprob: float, top: list[tuple[int, float]]) -> RequestOutput:
        """Add a sampled token to its sequence, then what a tool feeds after it (forced tokens, which the
        next step computes together with the sampled token, as a prefill chunk, before it samples the next
        one), and decide whether the sequence ends here."""
        self.generated_tokens += 1
        tokens = [token]
        end = self._push(seq, token)
        if end is None:
            for forced in self._tool_tokens(seq):
                tokens.append(forced)
                if (end := self._push(seq, forced)) is not None:
                    break
        reason, stop_reason, stop_string = end or (None, None, None)
        text = ""
        if seq.text is not None:
            if reason is not None and stop_string is None:
                seq.text.finish()
            text = seq.text.take(finished=reason is not None)
        if reason is not None:
            del self.sequences[seq.request_id]
            self.scheduler.remove(seq)
        n_forced = len(tokens) - 1
        return self._output(seq, tokens, [logprob] + [0.0] * n_forced, [top] + [[]] * n_forced if top else [], text,
                            reason, stop_reason, [False] + [True] * n_forced)

    def _tool_tokens(self, seq: Seq) -> list[int]:
        """The ids of what the request's tools answer to its output text so far; [] when none answers."""
        if not seq.params.tools or seq.text is None or self.tokenizer is None:
            return []
        fed = tools.answer(seq.text.text, seq.params.tools)
        return [] if fed is None else self.tokenizer.encode(fed)

    def _push(self, seq: Seq, token: int) -> tuple[str, int | str | None, str | None] | None:
        """Add one token to the sequence; if the sequence ends with it, why: (finish reason, stop reason,
        the stop string it completed)."""
        seq.tokens.append(token)
        if token in seq.stop_ids:
            return "stop", token, None
        if seq.text is not None and (stop_string := seq.text.add(token)) is not None:
            return "stop", stop_string, stop_string
        if seq.num_output == seq.budget:
            return "length", None, None
        return None

    def _output(self, seq: Seq, tokens: list[int], logprobs: list[float], top: list[list[tuple[int, float]]],
                text: str, reason: str | None, stop_reason: int | str | None, forced: list[bool]) -> RequestOutput:
        return RequestOutput(seq.request_id, tokens, logprobs, top, text, reason is not None, reason, stop_reason,
                             seq.prompt_len, seq.cached_tokens, seq.num_output, forced)
