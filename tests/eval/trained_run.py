"""A run trained here on worked math problems, long enough (300 steps, about half a minute) that its
greedy answers end in "#### <number>" lines; its Hugging Face export; and lm-eval helpers for task YAMLs
over local files. The run is built once per test session, into the session's temporary folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratchlm.cli import main
from scratchlm.data import corpus

from conftest import run_cli

# A small model with room for 5-shot prompts: 512 positions, trained on 128-token windows.
MODEL = ["--model.dim", "64", "--model.n_layers", "2", "--model.n_heads", "4", "--model.n_kv_heads", "2",
         "--model.ffn_hidden_dim", "128", "--model.max_seq_len", "512", "--train.seq_len", "128",
         "--train.micro_batch_size", "8", "--train.global_batch_tokens", "1024", "--data.vocab_size", "320",
         "--train.eval_every", "100", "--train.eval_batches", "2", "--train.log_every", "50",
         "--data.workers", "1", "--optim.warmup_steps", "5"]
STEPS = 300


@dataclass
class Trained:
    run: Path  # scratchlm run directory
    hf: Path  # its export-hf directory


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def trained_run(root: Path) -> Trained:
    """The session's trained run and export, built on first use."""
    trained = Trained(root / "run", root / "hf")
    if (root / "done").is_file():
        return trained
    root.mkdir(parents=True, exist_ok=True)
    docs = [{"text": corpus.format_math(p)} for p in corpus.math_problems("train", 1500)]
    data = write_jsonl(root / "math.jsonl", docs)
    run_cli("pretrain", "--data", str(data), "--out", str(trained.run), "--max-steps", str(STEPS), "--samples", "0",
            *MODEL, env={"SCRATCHLM_CACHE": str(root / "cache")})
    main(["export-hf", str(trained.run), str(trained.hf)])
    (root / "done").touch()
    return trained


def task_yaml(folder: Path, name: str, include: str | None = None, **fields: Any) -> Path:
    """A task YAML for lm-eval's --include_path: optionally one of lm-eval's own task files (a path under
    lm_eval/tasks) with the given fields replaced, e.g. its dataset by local files."""
    import lm_eval
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    config = {"task": name, **fields}
    if include:
        config = {"include": str(Path(lm_eval.__file__).parent / "tasks" / include), **config}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def local_dataset(**splits: Path) -> dict[str, Any]:
    """The YAML fields that point a task at local jsonl files, one per split; `datasets` caches beside them,
    not in the user's cache."""
    cache = next(iter(splits.values())).parent / "datasets-cache"
    return {"dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(path) for split, path in splits.items()},
                               "cache_dir": str(cache)}}


def lm_eval_run(model: str, model_args: dict[str, Any], tasks_dir: Path, task: str, **kwargs: Any) -> dict[str, Any]:
    """lm-eval's simple_evaluate on CPU, one request at a time, keeping every sample. Only the tasks in
    tasks_dir are indexed (they include lm-eval's own task files by path)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if model == "scratchlm":
        import scratchlm.eval.harness  # noqa: F401  (registers the model)
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[task], device="cpu", batch_size=1,
                                   task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
                                   log_samples=True,
                                   **kwargs)


def arc_records(n: int) -> list[dict[str, Any]]:
    """ARC-format records from the embedded story questions (the story's end as the question)."""
    from scratchlm.eval.multiple_choice import story_questions

    return [{"id": str(i), "question": q.context[-300:], "answerKey": "ABCD"[q.gold],
             "choices": {"text": q.choices, "label": list("ABCD")}} for i, q in enumerate(story_questions(n))]


def hub_folder(root: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    """A dataset laid out as openai/gsm8k is on the hub: a README declaring config 'main' and its parquet splits."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / "main").mkdir(parents=True)
    lines = ["---", "configs:", "- config_name: main", "  data_files:"]
    for split, rows in splits.items():
        pq.write_table(pa.Table.from_pylist(rows), root / "main" / f"{split}-00000-of-00001.parquet")
        lines += [f"  - split: {split}", f"    path: main/{split}-*"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]))
    return root


def hf_args(trained: Trained, **extra: Any) -> dict[str, Any]:
    return {"pretrained": str(trained.hf), "dtype": "float32", **extra}
