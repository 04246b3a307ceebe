import pytest
import torch

from scratchlm.config import OptimConfig
from scratchlm.errors import ScratchError
from scratchlm.model import build_model
from scratchlm.train.checkpoint import checkpoint_dirs, latest_checkpoint, load_checkpoint, save_checkpoint
from scratchlm.train.optim import build_optimizer

from conftest import small_model_config


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
