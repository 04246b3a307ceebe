"""`scratchlm report RUN_DIR`: the report card of a run and its ancestors (pretrain -> sft -> ...).

It reads what the runs already hold and computes nothing new:

    config.yaml        stage, parent, model shape (parameters)
    metrics.jsonl      tokens trained, training speed, the loss curve, the last validation loss
    eval/<task>.json   scores with their standard errors (scratchlm eval)
    eval/gsm8k_samples.jsonl   a few answers to show

and writes RUN_DIR/report.md (with plots/lineage_loss.png beside it) and RUN_DIR/report.html, a
single file with the figure embedded.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scratchlm import atomic
from scratchlm.config import Config
from scratchlm.eval.evaluate import EVAL_DIR
from scratchlm.eval.lineage import lineage
from scratchlm.model import num_params
from scratchlm.train.metrics import read_metrics

SAMPLE_ANSWERS = 2  # gsm8k answers shown per stage
MULTIPLE_CHOICE = ("story_questions", "arc", "hellaswag", "mmlu")
FIGURE = "lineage_loss.png"


@dataclass
class Stage:
    name: str
    run_dir: Path
    cfg: Config
    metrics: list[dict[str, Any]]
    evals: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> eval/<task>.json
    answers: list[dict[str, Any]] = field(default_factory=list)  # the first gsm8k samples


def read_stage(run_dir: Path, cfg: Config) -> Stage:
    evals = {}
    for path in sorted((run_dir / EVAL_DIR).glob("*.json")):
        summary = json.loads(path.read_text())
        evals[summary["task"]] = summary
    answers_file = run_dir / EVAL_DIR / "gsm8k_samples.jsonl"
    answers = []
    if answers_file.is_file():
        with answers_file.open() as f:
            answers = [json.loads(line) for line, _ in zip(f, range(SAMPLE_ANSWERS), strict=False)]
    return Stage(run_dir.name, run_dir, cfg, read_metrics(run_dir), evals, answers)


def _last(records: list[dict[str, Any]], key: str) -> Any:
    return next((r[key] for r in reversed(records) if key in r), None)


def _train_seconds(records: list[dict[str, Any]]) -> float | None:
    """Training time from the logged throughput: each step's tokens over the tokens per second at that step
    (evaluation and checkpointing excluded)."""
    seconds, done = 0.0, 0
    for r in records:
        if r.get("tokens_per_s") and "tokens" in r:
            seconds += (r["tokens"] - done) / r["tokens_per_s"]
            done = r["tokens"]
    return seconds or None


def _score(summary: dict[str, Any] | None, metric: str, digits: int = 3) -> str:
    if summary is None or summary["metrics"].get(metric) is None:
        return "–"
    value, se = summary["metrics"][metric], summary["metrics"].get(f"{metric}_stderr")
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")


def _gsm8k_setting(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return ""
    s = summary["settings"]
    tools = "".join(f"{tool}, " for tool in s.get("tools") or [])
    return f" ({'chat, ' if s.get('chat') else ''}{tools}{s.get('fewshot', 0)}-shot, n={summary['n']})"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def table(stages: list[Stage]) -> list[list[str]]:
    """Rows of the report card, a header first: one row per stage, oldest first."""
    mc_tasks = [t for t in MULTIPLE_CHOICE if any(t in s.evals for s in stages)]
    header = ["stage", "run", "parameters", "tokens trained", "train time", "validation loss", "bits per byte",
              "gsm8k strict", "gsm8k flexible", *(f"{t} acc" for t in mc_tasks)]
    rows = [header]
    for s in stages:
        tokens, val = _last(s.metrics, "tokens"), _last(s.metrics, "val_loss")
        gsm = s.evals.get("gsm8k")
        rows.append([s.cfg.stage, s.name, f"{num_params(s.cfg.model) / 1e6:.2f}M",
                     "–" if tokens is None else f"{tokens:,}", _duration(_train_seconds(s.metrics)),
                     "–" if val is None else f"{val:.3f}", _score(s.evals.get("bpb"), "bits_per_byte"),
                     _score(gsm, "strict_match") + _gsm8k_setting(gsm), _score(gsm, "flexible_extract"),
                     *(_score(s.evals.get(t), "acc") for t in mc_tasks)])
    return rows


def loss_figure(stages: list[Stage]) -> bytes:
    """Every stage's training and validation loss on one axis of steps, each stage after its parent."""
    from matplotlib.figure import Figure  # no pyplot: the host process's backend is left as it is

    fig = Figure(figsize=(8, 4.2), dpi=120)
    ax = fig.subplots()
    offset = 0
    for i, s in enumerate(stages):
        train = [(offset + r["step"], r["loss"]) for r in s.metrics if "loss" in r]
        val = [(offset + r["step"], r["val_loss"]) for r in s.metrics if "val_loss" in r]
        color = f"C{i % 10}"
        if train:
            ax.plot(*zip(*train, strict=True), lw=0.9, alpha=0.6, color=color, label=f"{s.cfg.stage}: {s.name}")
        if val:
            ax.plot(*zip(*val, strict=True), "o", ms=3.5, color=color)
        if offset:
            ax.axvline(offset, color="grey", lw=0.8, ls="--")
        offset += max((r["step"] for r in s.metrics), default=0)
    ax.set_xlabel("optimizer step (stages one after another; dots: validation)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("loss of every stage")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _answers(stages: list[Stage]) -> list[tuple[str, dict[str, Any]]]:
    return [(s.name, a) for s in stages for a in s.answers]


def markdown(stages: list[Stage], figure: str) -> str:
    rows = table(stages)
    lines = [f"# Report card: {stages[-1].name}", "",
             "| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", "Scores are ± one standard error (docs/eval.md).", "", f"![loss of every stage]({figure})", ""]
    answers = _answers(stages)
    if answers:
        lines += ["## Sample gsm8k answers", ""]
        for name, a in answers:
            verdict = "right" if a["flexible_correct"] else "wrong"
            lines += [f"**{name}**: {a['question']}", "", "```", a["completion"].strip(), "```",
                      f"extracted {a['strict_match']} (strict), {a['flexible_extract']} (flexible); gold {a['gold']}: "
                      f"{verdict}", ""]
    return "\n".join(lines)


def page(stages: list[Stage], png: bytes) -> str:
    rows = table(stages)
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    answers = "".join(
        f"<h3>{html.escape(name)}</h3><p>{html.escape(a['question'])}</p><pre>{html.escape(a['completion'].strip())}"
        f"</pre><p>extracted {html.escape(a['strict_match'])} (strict), {html.escape(a['flexible_extract'])} "
        f"(flexible); gold {html.escape(a['gold'])}: {'right' if a['flexible_correct'] else 'wrong'}</p>"
        for name, a in _answers(stages))
    image = base64.b64encode(png).decode()
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Report card: {html.escape(stages[-1].name)}"
            "</title><style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:"
            "collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}pre{background:#f4f4f4;"
            "padding:.6em;white-space:pre-wrap}</style></head><body>"
            f"<h1>Report card: {html.escape(stages[-1].name)}</h1><table><tr>{cells}</tr>{body}</table>"
            "<p>Scores are ± one standard error.</p>"
            f"<img alt='loss of every stage' src='data:image/png;base64,{image}'>"
            + (f"<h2>Sample gsm8k answers</h2>{answers}" if answers else "") + "</body></html>\n")


def report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write RUN_DIR/report.md and RUN_DIR/report.html for the run and its ancestors; returns their paths."""
    run_dir = Path(run_dir)
    stages = [read_stage(path, cfg) for path, cfg in reversed(lineage(run_dir))]
    png = loss_figure(stages)
    (run_dir / "plots").mkdir(exist_ok=True)
    (run_dir / "plots" / FIGURE).write_bytes(png)
    md, page_file = run_dir / "report.md", run_dir / "report.html"
    atomic.write_text(md, markdown(stages, f"plots/{FIGURE}"))
    atomic.write_text(page_file, page(stages, png))
    return md, page_file
