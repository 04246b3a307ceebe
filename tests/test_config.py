import pytest

from scratchlm.config import PRESETS, load_config, parse_overrides
from scratchlm.errors import ScratchError
from scratchlm.model import num_params


def test_overrides_are_typed():
    cfg = load_config("tiny", overrides={"optim.lr": "3e-4", "train.precision": "fp32", "train.compile": "model",
                                         "train.max_steps": "1e3"})
    assert cfg.optim.lr == 3e-4 and cfg.train.precision == "fp32" and cfg.train.compile == "model"
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)


def test_unknown_key_names_the_nearest():
    with pytest.raises(ScratchError, match="did you mean 'optim.lr'"):
        load_config("tiny", overrides={"optim.lrr": "1"})
    with pytest.raises(ScratchError, match="did you mean 'train.max_steps'"):
        load_config("tiny", overrides={"train.max_step": "1"})


def test_bad_values_are_refused():
    for key, value, message in [("optim.lr", "0", "optim.lr must be positive"),
                                ("optim.lr", "-1e-3", "optim.lr must be positive"),
                                ("model.n_heads", "3", "not divisible by model.n_heads"),
                                ("model.n_kv_heads", "3", "must divide model.n_heads"),
                                ("train.global_batch_tokens", "1000", "not a positive multiple"),
                                ("train.global_batch_tokens", "0", "not a positive multiple"),
                                ("model.n_heads", "0", "model.n_heads must be at least 1"),
                                ("parallel.pp_microbatches", "-2", "pp_microbatches must be"),
                                ("train.max_steps", "ten", "wants int"),
                                ("train.precision", "fp8", "bf16 or fp32"),
                                ("optim.beta1", "2", "optim.beta1 and optim.beta2 must be in"),
                                ("model.norm_eps", "-1", "model.norm_eps must be positive"),
                                ("train.eval_batches", "0", "eval_batches"),
                                ("train.compile", "graph", "auto, off, model or blocks"),
                                ("sft.tools", "abacus", "sft.tools: unknown tool 'abacus'; known tools: calculator")]:
        with pytest.raises(ScratchError, match=message):
            load_config("tiny", overrides={key: value})


def test_compile_as_the_bool_it_was_still_reads(tmp_path):
    """config.yaml of runs made when train.compile was a bool: true compiled each block, false nothing."""
    for old, mode in [("true", "blocks"), ("false", "off"), ("True", "blocks")]:
        (tmp_path / "old.yaml").write_text(f"train:\n  compile: {old}\n")
        assert load_config(config_file=tmp_path / "old.yaml").train.compile == mode
        assert load_config("tiny", overrides={"train.compile": old}).train.compile == mode
    assert load_config("tiny").train.compile == "auto"


def test_yaml_file_round_trip(tmp_path):
    cfg = load_config("tiny", overrides={"optim.lr": "1e-3", "model.dim": "128"})
    cfg.save(tmp_path / "c.yaml")
    again = load_config(config_file=tmp_path / "c.yaml")
    assert again == cfg
    (tmp_path / "bad.yaml").write_text("optim:\n  lrate: 1\n")
    with pytest.raises(ScratchError, match="optim.lr"):
        load_config(config_file=tmp_path / "bad.yaml")


def test_unknown_preset():
    with pytest.raises(ScratchError, match="did you mean '70b'"):
        load_config("70")


@pytest.mark.parametrize("name,billions", [("1b", 1.236), ("3b", 3.213), ("7b", 6.738), ("13b", 13.016),
                                           ("70b", 70.554)])
def test_presets_have_llama_sizes(name, billions):
    assert name in PRESETS
    assert num_params(load_config(name).model) / 1e9 == pytest.approx(billions, abs=0.002)


def test_parse_overrides_forms():
    assert parse_overrides(["--optim.lr", "3e-4", "--train.compile=off", "--optim.beta1", "-0.5"]) == {
        "optim.lr": "3e-4", "train.compile": "off", "optim.beta1": "-0.5"}
    with pytest.raises(ScratchError, match="needs a value"):
        parse_overrides(["--optim.lr"])


@pytest.mark.parametrize("key,value", [("optim.lr", "nan"), ("optim.lr", "inf"), ("optim.beta1", "NaN"),
                                       ("model.rope_theta", "-inf"), ("data.val_fraction", float("nan"))])
def test_non_finite_numbers_are_refused_by_name(key, value):
    with pytest.raises(ScratchError, match=rf"'{key}' wants a finite number"):
        load_config("tiny", overrides={key: value})


@pytest.mark.parametrize("key,value", [("optim.lr", True), ("train.max_steps", False), ("train.max_steps", "inf")])
def test_a_bool_or_infinity_is_no_number(key, value):
    """YAML reads `lr: true` as a bool, which Python would take for the number 1."""
    with pytest.raises(ScratchError, match=f"'{key}' wants"):
        load_config("tiny", overrides={key: value})


@pytest.mark.parametrize("content,message", [(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8 text"),
                                             ("optim:\n  lr: 1e-3  # caf\u00e9\n".encode("latin-1"), "not UTF-8 text"),
                                             (b"optim:\n  lr: 1e-3\x00\n", "not valid YAML")])
def test_a_config_file_that_is_not_yaml_text(tmp_path, content, message):
    path = tmp_path / "my.yaml"
    path.write_bytes(content)
    with pytest.raises(ScratchError, match=message) as err:
        load_config(config_file=path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert path.read_bytes() == content


def test_a_folder_is_no_config_file(tmp_path):
    with pytest.raises(ScratchError, match="is a folder"):
        load_config(config_file=tmp_path)
