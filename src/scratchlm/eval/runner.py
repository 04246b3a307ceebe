"""The runner: what evaluation asks of a model, and nothing else.

    generate        prompts (token ids) -> completions (text), cut at stop strings, at most N new tokens
    loglikelihoods  (context ids, continuation ids) pairs -> (sum of log P(continuation | context), greedy?)

Both follow lm-evaluation-harness's Hugging Face model (`hf`), so a run scored here and its export
scored by lm-eval see the same tokens: a prompt too long for the context is cut from the left, a
completion is decoded without special tokens and cut before the first stop string, and a
continuation is scored after (context + continuation) is cut from the left to the context + 1.

Generation goes through one function, `Runner.generate`; log-likelihoods through one batched full
forward of the model (rows padded on the right, where causal attention never looks back at them).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from scratchlm.chat import ChatFormat, find_chat_format, generation_stop_ids
from scratchlm.errors import ScratchError
from scratchlm.eval.scorer import cut_at_stops
from scratchlm.hardware import resolve_device
from scratchlm.infer.engine import Completion, Engine, SamplingParams
from scratchlm.model import Transformer
from scratchlm.run import load_run, open_run
from scratchlm.tokenizer import BPETokenizer

# Logits of one batch of log-likelihood rows are kept under this many elements (4 GiB in fp32).
MAX_LOGIT_ELEMENTS = 2**30


def rolling_windows(tokens: Sequence[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) pairs that score every token of `tokens` exactly once, as lm-eval's
    loglikelihood_rolling does: the first token is predicted from `prefix` (bos), each window predicts up
    to max_len tokens, and a shorter last window takes earlier text as context up to max_len inputs."""
    seq = [prefix, *tokens]
    pairs = []
    for start in range(1, len(seq), max_len):
        end = min(start + max_len, len(seq))
        pairs.append((seq[max(0, end - 1 - max_len):start], seq[start:end]))
    return pairs


def batches(order: list[int], lengths: Sequence[int], max_rows: int, max_tokens: int) -> Iterator[list[int]]:
    """Split order (longest first) into batches of at most max_rows rows and max_tokens padded tokens."""
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) == max_rows or (len(batch) + 1) * width > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ScratchError(f"--batch-size must be at least 1, got {batch_size}")


class Runner:
    """A model with its tokenizer and chat format, ready to generate and to score: a run's latest weights
    (Runner.from_run: `scratchlm eval`, the lm-eval adapter) or weights in memory (the scores logged during
    training, scratchlm.train.task_scores). Every task runs on either the same way.

    chat_format: how the model chats, None for a model never taught to (an imported base model).
    checkpoint: the checkpoint folder the weights come from, None for weights in memory.
    """

    def __init__(self, model: Transformer, tokenizer: BPETokenizer, chat_format: ChatFormat | None,
                 batch_size: int = 16, checkpoint: str | None = None) -> None:
        _check_batch_size(batch_size)
        self.model, self.tokenizer, self.chat_format = model.eval(), tokenizer, chat_format
        self.device = next(model.parameters()).device
        self.batch_size = batch_size
        self.checkpoint = checkpoint
        # Where the export's generation_config stops too (eos ids, the chat format's end of turn, bos), so a
        # completion here ends where transformers ends it on the export.
        self.stop_ids = frozenset(generation_stop_ids(tokenizer, chat_format))

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", batch_size: int = 16) -> Runner:
        """The run's latest weights, tokenizer and chat format."""
        _check_batch_size(batch_size)  # before the weights are loaded
        checkpoint = open_run(run_dir)[2].name
        _, tokenizer, model = load_run(run_dir, resolve_device(device))
        return cls(model, tokenizer, find_chat_format(run_dir, tokenizer), batch_size, checkpoint)

    @property
    def context_len(self) -> int:
        return self.model.cfg.max_seq_len

    def chat(self) -> ChatFormat:
        """The chat format, for a task that asks in chat; a model without one is refused."""
        if self.chat_format is None:
            raise ScratchError("this model has no chat format (a base model without a chat template): evaluate it "
                               "with --no-chat, or write its template to the run's chat_template.jinja")
        return self.chat_format

    def fit_prompt(self, prompt: list[int], max_new_tokens: int) -> tuple[list[int], bool]:
        """The prompt cut from the left to leave room for max_new_tokens (as lm-eval's hf model cuts it),
        and whether it was cut."""
        if max_new_tokens >= self.context_len:
            raise ScratchError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's "
                               f"context of {self.context_len} tokens; lower it")
        room = self.context_len - max_new_tokens
        return prompt[-room:], len(prompt) > room

    def generate(self, prompts: Sequence[list[int]], max_new_tokens: int, stop: Sequence[str],
                 temperature: float = 0.0, seeds: Sequence[int | None] | None = None,
                 stop_ids: Iterable[int] | None = None, desc: str = "generate", tools: Sequence[str] = ()
                 ) -> list[str]:
        """Completions of prompts (each already fitting the context with max_new_tokens to spare), as text
        without special tokens, cut before the first stop string. Generation ends at a stop token (self.stop_ids,
        or stop_ids), a stop string, or max_new_tokens. seeds: one per prompt when sampling (temperature > 0).
        tools: what the engine runs as each completion grows (infer/tools.py); their output is in the text.

        Every generation of an evaluation goes through here: all prompts go to the batched engine at once,
        which decodes as many together as its memory allows.
        """
        engine = Engine(self.model, self.stop_ids if stop_ids is None else stop_ids, self.tokenizer,
                        max_running=self.batch_size)
        stops = [s for s in stop if s]
        ids = [engine.add_request(prompt, SamplingParams(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=None if seeds is None else seeds[i],
            stop=stops, skip_special_tokens=True, tools=tuple(tools))) for i, prompt in enumerate(prompts)]
        done = {i: Completion(i) for i in ids}
        with tqdm(total=len(ids), desc=desc, unit="prompt", leave=False) as bar:
            while engine.has_work():
                for out in engine.step():
                    done[out.request_id].add(out)
                    bar.update(out.finished)
        return [cut_at_stops(done[i].text, stop) for i in ids]

    @torch.inference_mode()
    def loglikelihoods(self, requests: Sequence[tuple[list[int], list[int]]], desc: str = "score"
                       ) -> list[tuple[float, bool]]:
        """For each (context, continuation): the summed log-probability of the continuation's tokens given
        everything before them, and whether greedy decoding would have produced exactly the continuation."""
        rows, targets = [], []
        for context, continuation in requests:
            if not continuation:
                raise ScratchError("a continuation to score is empty")
            if len(continuation) > self.context_len:
                raise ScratchError(f"a continuation of {len(continuation)} tokens is longer than the model's "
                                   f"context of {self.context_len}")
            rows.append((context + continuation)[-(self.context_len + 1):][:-1])
            targets.append(continuation)
        lengths = [len(r) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: -lengths[i])
        max_tokens = max(MAX_LOGIT_ELEMENTS // self.model.cfg.vocab_size, self.context_len)
        results: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        with tqdm(total=len(rows), desc=desc, unit="request", leave=False) as bar:
            for batch in batches(order, lengths, self.batch_size, max_tokens):
                width = lengths[batch[0]]
                tokens = torch.full((len(batch), width), self.tokenizer.pad_id, dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens[row, :lengths[i]] = torch.tensor(rows[i])
                logits = self.model(tokens.to(self.device))
                for row, i in enumerate(batch):
                    n = len(targets[i])
                    logprobs = F.log_softmax(logits[row, lengths[i] - n:lengths[i]].float(), dim=-1)
                    target = torch.tensor(targets[i], device=self.device)
                    picked = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                    results[i] = (float(picked.sum()), bool((logprobs.argmax(-1) == target).all()))
                bar.update(len(batch))
        return results
