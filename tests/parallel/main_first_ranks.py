"""One rank of a job that tries World.main_first (and from_main) in several ways, one after another, and
writes what each raised on this rank to OUT/SCENARIO.RANK.json. Started by test_world.py without torchrun, as a job
spread over nodes is: no launcher stops the other ranks when one fails, so only main_first can.

    python main_first_ranks.py OUT DATA_DIR SCENARIO...     (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set)
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from scratchlm.config import DataConfig
from scratchlm.data.prepare import Prepared, prepare, same_tokenizer
from scratchlm.errors import ScratchError
from scratchlm.parallel.world import MESH_DIMS, ParallelDims, World

# Far shorter than a run's 30 minutes, far longer than a prepare here: a rank left waiting fails the test
# with gloo's timeout error instead of the message it should have had.
TIMEOUT = datetime.timedelta(seconds=120)


def scenario(name: str, rank: int, data: Path):
    """-> (fn for main_first, agree or None)."""
    def fail_on(bad_rank: int, error: Exception):
        def fn():
            if rank == bad_rank:
                raise error
            return rank
        return fn

    if name == "main_raises_oserror":
        return fail_on(0, OSError("disk full while writing the cache")), None
    if name == "other_raises_runtime_error":
        return fail_on(1, RuntimeError("worker pool crashed")), None
    if name == "from_main":
        return (lambda: 100 + rank), None
    if name == "from_main_raises":
        return fail_on(0, ScratchError("the peak could not be measured")), None
    if name == "main_raises_scratch_error":
        return fail_on(0, ScratchError("data path x.jsonl does not exist")), None
    if name == "different_tokenizers":  # as on nodes that hold different files under one path
        return (lambda: Prepared(data / f"rank{rank}", {"tokenizer_hash": f"tokenizer-of-rank-{rank}"})), same_tokenizer
    # A real prepare of the same file into one shared folder: rank 0 makes it, rank 1 reuses it.
    cfg = DataConfig(source=str(data / "same.jsonl"), dir=str(data / "shared"), vocab_size=300, val_fraction=0.2,
                     workers=1)
    return (lambda: prepare(cfg)), same_tokenizer


def main(out: Path, data: Path, names: list[str]) -> None:
    dist.init_process_group("gloo", timeout=TIMEOUT)
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (1, 1, 2, 1), mesh_dim_names=MESH_DIMS)
    world = World(ParallelDims(dp_shard=2), torch.device("cpu"), mesh)
    for name in names:
        fn, agree = scenario(name, rank, data)
        try:
            if name.startswith("from_main"):  # rank 0's result on every rank, e.g. a measured peak
                outcome = {"error": None, "message": str(world.from_main(fn))}
            else:
                world.main_first(fn, agree)
                outcome = {"error": None, "message": ""}
        except Exception as exc:  # what each rank raised is the test's result, whatever it is
            outcome = {"error": type(exc).__name__, "message": str(exc)}
        (out / f"{name}.{rank}.json").write_text(json.dumps(outcome))
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
