"""Every torchrun command that README.md and docs/scaling.md show runs as written, on CPU ranks.

GPU-sized settings are scaled down the way a user trying them on a laptop would: 2 processes per
node, one node (the multi-node rendezvous on this machine), the tiny preset, a few steps."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_port, subprocess_env

DOCS = [ROOT / "README.md", ROOT / "docs" / "scaling.md"]


def torchrun_examples() -> list[tuple[str, str]]:
    """(file name, command) for every torchrun line of a bash block, backslash continuations joined."""
    found = []
    for path in DOCS:
        text = path.read_text().replace("\\\n", " ")
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                command = re.sub(r"\s+", " ", line)
                if line.startswith("torchrun ") and command not in [c for _, c in found]:
                    found.append((path.name, command))
    return found


def on_cpu(command: str, data: Path, out: Path) -> list[str]:
    """The documented command, scaled to this machine (the layout flags are kept as written)."""
    command = command.replace("$(which scratchlm)", shutil.which("scratchlm") or str(Path(sys.executable).parent /
                                                                                      "scratchlm"))
    command = command.replace(" ...", " --preset tiny")
    command = command.replace("HEAD:29500", f"127.0.0.1:{free_port()}").replace("--rdzv-id JOB", "--rdzv-id test")
    args = shlex.split(command)
    for flag, value in (("--nproc-per-node", "2"), ("--nnodes", "1"), ("--preset", "tiny")):
        if flag in args:
            args[args.index(flag) + 1] = value
    if "--out" in args:
        args[args.index("--out") + 1] = str(out)
    else:
        args += ["--out", str(out)]
    if "--data" in args:
        args[args.index("--data") + 1] = str(data)
    return [sys.executable, "-m", "torch.distributed.run", *args[1:], "--max-steps", "2", "--samples", "0",
            "--data.embedded_docs", "300", "--data.val_fraction", "0.2", "--train.eval_batches", "1"]


EXAMPLES = torchrun_examples()


def test_the_docs_show_torchrun_examples():
    assert len(EXAMPLES) >= 4 and any("--preset tiny" in cmd for _, cmd in EXAMPLES)


@pytest.mark.parametrize("where,command", EXAMPLES, ids=[f"{w}:{c[:60]}" for w, c in EXAMPLES])
def test_documented_torchrun_command_runs(where, command, corpus_jsonl, tmp_path):
    cmd = on_cpu(command, corpus_jsonl, tmp_path / "run")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert proc.returncode == 0, f"{where}: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "run" / "checkpoints" / "step_000002").is_dir()
