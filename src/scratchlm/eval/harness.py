"""lm-evaluation-harness model adapter: lm-eval runs any of its tasks on a scratchlm run directory.

    python -m scratchlm.eval --model scratchlm --model_args run=RUN_DIR --tasks arc_easy,gsm8k
    # or, in Python:
    import lm_eval, scratchlm.eval.harness  # the import registers the model "scratchlm"
    lm_eval.simple_evaluate(model="scratchlm", model_args="run=RUN_DIR", tasks=["gsm8k"])

lm-eval finds a model by name in its own registry (`register_model`), which it fills by importing
its own modules only: it has no plugin discovery, so the registration must happen in the process
that evaluates. `python -m scratchlm.eval ARGS` is lm-eval's own command line with scratchlm
registered; its arguments are lm-eval's.

model_args: run (the run directory), device (auto), batch_size (16), max_gen_toks (256), add_bos_token
(true: the context starts with bos, as the run's exported tokenizer does for lm-eval's `hf` model).

The adapter is thin: lm-eval's TemplateLM splits contexts from continuations, and the scratchlm
runner computes (scratchlm.eval.runner), so lm-eval with this adapter and lm-eval with `hf` on the
exported model score the same tokens the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

from scratchlm.eval.runner import Runner, rolling_windows

MAX_GEN_TOKS = 256  # lm-eval's default for generate_until


def _flag(value: bool | str) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")


@register_model("scratchlm")
class ScratchLM(TemplateLM):
    """A scratchlm run as an lm-eval model: loglikelihood, loglikelihood_rolling and generate_until."""

    def __init__(self, run: str, device: str | None = None, batch_size: int | str | None = 16,
                 max_gen_toks: int | str = MAX_GEN_TOKS, add_bos_token: bool | str = True, **_: Any) -> None:
        super().__init__()
        # lm-eval's command line also passes batch_size "auto" and max_batch_size; a fixed batch serves here.
        rows = int(batch_size) if str(batch_size).isdigit() else 16
        # lm-eval's command line passes cuda:0 unless told otherwise; its hf model then falls back to the CPU too.
        if device is None or (device.startswith("cuda") and not torch.cuda.is_available()):
            device = "auto"
        self.run_dir = Path(run)
        self.runner = Runner.from_run(run, device, rows)
        self.tokenizer = self.runner.tokenizer
        self._max_gen_toks = int(max_gen_toks)
        self.add_bos_token = _flag(add_bos_token)
        self.bos_text = self.tokenizer.decode([self.tokenizer.bos_id])

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_id

    @property
    def max_length(self) -> int:
        return self.runner.context_len

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(self.run_dir.resolve())

    def chat_template(self, chat_template: bool | str = False) -> str:
        return ""  # the chat format lives in scratchlm.chat; apply_chat_template renders through it

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        """Our tokenizer, adding bos as the exported tokenizer does, unless the text already starts with it."""
        bos = self.add_bos_token and not string.startswith(self.bos_text) if add_special_tokens is None \
            else add_special_tokens
        ids = self.tokenizer.encode(string, bos=bos)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special=skip_special_tokens)

    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        results = self.runner.loglikelihoods([(context, continuation) for _, context, continuation in requests])
        for (key, _, _), answer in zip(requests, results, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Each text's whole log-likelihood, window by window (scratchlm.eval.runner.rolling_windows)."""
        texts = [req.args[0] for req in requests]
        windows = [rolling_windows(self.tok_encode(text), self.prefix_token_id, self.max_length) for text in texts]
        scores = iter(self.runner.loglikelihoods([w for doc in windows for w in doc], desc="loglikelihood_rolling"))
        totals = [sum(next(scores)[0] for _ in doc) for doc in windows]
        for text, total in zip(texts, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Completions of each context, requests with the same generation settings together: the context cut
        from the left to leave max_gen_toks, generation cut before the first `until` string or the eos text."""
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        out = [""] * len(requests)
        for members in tqdm(groups.values(), desc="generate_until", disable=disable_tqdm or len(groups) == 1):
            kwargs = normalize_gen_kwargs(requests[members[0]].args[1], self.max_gen_toks)
            until = handle_stop_sequences(kwargs.get("until"), eos=eos_text)
            max_new = kwargs["max_gen_toks"]
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            prompts = [self.runner.fit_prompt(self.tok_encode(requests[i].args[0]), max_new)[0] for i in members]
            completions = self.runner.generate(prompts, max_new, until, temperature)
            for i, text in zip(members, completions, strict=True):
                out[i] = text
                self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as text through the run's chat format (ending where the assistant answers)."""
        return self.tokenizer.decode(self.runner.chat().prompt_ids(chat_history))


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line, with the scratchlm model registered (by importing this module)."""
    from lm_eval.__main__ import cli_evaluate

    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()

