import json
import math

import pytest

from scratchlm.train.metrics import LossWatch, MetricsLog, TrainingDiverged, plot_run, read_metrics


def test_nan_and_inf_stop_training():
    for bad in (math.nan, math.inf):
        with pytest.raises(TrainingDiverged, match="diverged"):
            LossWatch(warmup_steps=0).check(5, bad, 1e-3)


def test_spike_warns_and_names_the_learning_rate():
    watch = LossWatch(warmup_steps=0)
    for step in range(1, 30):
        assert watch.check(step, 3.0 - step * 0.01, 1e-3) is None
    warning = watch.check(30, 8.0, 1e-3)
    assert warning and "spiked" in warning and "--optim.lr" in warning


def test_plateau_warns_but_a_falling_loss_does_not():
    falling, flat = LossWatch(warmup_steps=0, window=10), LossWatch(warmup_steps=0, window=10)
    late = LossWatch(warmup_steps=0, peak_lr=1e-3, window=10)  # the lr has decayed below half its peak
    assert not any(late.check(s, 3.0 + 0.001 * (s % 2), 4e-4) for s in range(1, 80))
    warnings_falling = [falling.check(s, 5.0 - 0.01 * s, 1e-3) for s in range(1, 80)]
    warnings_flat = [flat.check(s, 3.0 + 0.001 * (s % 2), 1e-3) for s in range(1, 80)]
    assert not any(warnings_falling)
    assert any(w and "stopped going down" in w and "learning rate" in w for w in warnings_flat)


def test_metrics_log_plots_and_truncate(tmp_path):
    log = MetricsLog(tmp_path)
    log.write([{"step": s, "loss": 5 - 0.1 * s, "lr": 1e-3, "tokens_per_s": 100.0} for s in range(1, 11)])
    log.write([{"step": 10, "loss": 4.0, "lr": 1e-3, "tokens_per_s": 1.0, "val_loss": 4.2}])
    log.close()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(1, 11)) + [10]
    assert {p.name for p in plot_run(tmp_path)} == {"loss.png", "lr.png"}
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 10_000
    assert any((tmp_path / "tensorboard").iterdir())
    MetricsLog(tmp_path).truncate_after(4)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0, "lr": 0.1}\n{"step": 2, "lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1]
    MetricsLog(tmp_path, enabled=True).truncate_after(5)
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.0, "lr": 0.1}]
