import pytest
import torch

from scratchlm.config import OptimConfig
from scratchlm.errors import ScratchError
from scratchlm.model import build_model
from scratchlm.train.checkpoint import checkpoint_dirs, latest_checkpoint, load_checkpoint, save_checkpoint
from scratchlm.train.optim import build_optimizer

from conftest import record_syncs, small_model_config, synced_before_and_after


def _trained(seed: int = 0):
    model = build_model(small_model_config(), seed=seed)
    opt = build_optimizer(model, OptimConfig())
    model(torch.randint(0, 300, (2, 8))).sum().backward()
    opt.step()
    return model, opt


def test_save_load_restores_everything(tmp_path):
    model, opt = _trained()
    torch.manual_seed(123)
    save_checkpoint(tmp_path, 7, model, opt, {"tokens": 99}, keep=2)
    expected_rng = torch.rand(3)
    fresh = build_model(small_model_config(), seed=5)
    fresh_opt = build_optimizer(fresh, OptimConfig())
    state = load_checkpoint(latest_checkpoint(tmp_path), fresh, fresh_opt)
    assert state == {"step": 7, "tokens": 99}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(torch.rand(3), expected_rng)  # the RNG continues where it was saved
    sa, sb = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_keeps_last_k_and_ignores_unfinished(tmp_path):
    model, opt = _trained()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, {}, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step_000002", "step_000003"]
    (tmp_path / "checkpoints" / "step_000009.tmp").mkdir()  # a write that crashed half way
    assert latest_checkpoint(tmp_path).name == "step_000003"


def test_refuses_another_models_checkpoint(tmp_path):
    model, opt = _trained()
    save_checkpoint(tmp_path, 1, model, opt, {}, keep=1)
    other = build_model(small_model_config(dim=96), seed=0)
    with pytest.raises(ScratchError, match="another model"):
        load_checkpoint(latest_checkpoint(tmp_path), other, None)


# --------------------------------------------------------------------------------------------------
# Durability: the files, then the folder, reach the disk before the rename; the rename after it
# --------------------------------------------------------------------------------------------------


def test_checkpoint_is_on_disk_before_its_name_says_it_is_there(tmp_path, monkeypatch):
    model, opt = _trained()
    events = record_syncs(monkeypatch)
    final = save_checkpoint(tmp_path, 5, model, opt, {}, keep=2)
    before, after = synced_before_and_after(events, "step_000005.tmp")
    files = sorted(p.name for p in final.iterdir())
    assert files == ["model.safetensors", "optimizer.pt", "rng.pt", "state.json"]
    for name in files:
        assert (final / name).stat().st_ino in before, f"{name} was not flushed before the rename"
    assert final.stat().st_ino in before  # the folder's entries too
    assert (tmp_path / "checkpoints").stat().st_ino in after  # and the rename itself


# --------------------------------------------------------------------------------------------------
# A damaged checkpoint: one line naming the checkpoint, the file, and the checkpoint before it
# --------------------------------------------------------------------------------------------------


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


DAMAGE = {
    "weights missing": ("model.safetensors", lambda p: p.unlink(), "model.safetensors is missing"),
    "weights truncated": ("model.safetensors", _truncate, "model.safetensors cannot be read"),
    "weights overwritten": ("model.safetensors", lambda p: p.write_bytes(b"\xff" * 4096),
                            "model.safetensors cannot be read"),
    "optimizer truncated": ("optimizer.pt", _truncate, "optimizer.pt cannot be read"),
    "rng missing": ("rng.pt", lambda p: p.unlink(), "rng.pt is missing"),
    "state garbled": ("state.json", lambda p: p.write_text("{"), "state.json cannot be read"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_names_the_file_and_the_way_back(tmp_path, damage):
    file, spoil, expected = DAMAGE[damage]
    model, opt = _trained()
    for step in (1, 2):
        save_checkpoint(tmp_path, step, model, opt, {}, keep=2)
    latest = latest_checkpoint(tmp_path)
    spoil(latest / file)
    fresh = build_model(small_model_config(), seed=5)
    with pytest.raises(ScratchError) as err:
        load_checkpoint(latest, fresh, build_optimizer(fresh, OptimConfig()))
    message = str(err.value)
    assert str(latest) in message and expected in message, message
    assert "step_000001" in message and "\n" not in message
    # The checkpoint before it is untouched and loads.
    assert load_checkpoint(checkpoint_dirs(tmp_path)[0], fresh, build_optimizer(fresh, OptimConfig()))["step"] == 1


@pytest.mark.parametrize("tied", [True, False])
def test_a_reward_model_takes_a_language_models_trunk_and_keeps_its_new_head(tmp_path, tied):
    from scratchlm.train.checkpoint import load_weights

    policy = build_model(small_model_config(tie_embeddings=tied), seed=0)
    save_checkpoint(tmp_path, 1, policy, None, {}, keep=1)
    scorer = build_model(small_model_config(tie_embeddings=tied, head="score"), seed=3)
    head = scorer.score.weight.clone()
    with pytest.raises(ScratchError, match="score.weight is missing"):
        load_weights(scorer, latest_checkpoint(tmp_path))
    load_weights(scorer, latest_checkpoint(tmp_path), fresh=("score.weight",))
    trunk = {k: v for k, v in policy.state_dict().items() if k != "output.weight"}
    got = scorer.state_dict()
    assert set(got) == set(trunk) | {"score.weight"}
    assert all(torch.equal(got[k], v) for k, v in trunk.items())
    assert torch.equal(scorer.score.weight, head)  # the new head keeps its initial values
