"""``streamae backtest``: reading recordings, verdicts per key, the rate sweep, the settings
to deploy, and the report folder with a real PNG per key."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from streamae.backtest import deploy, plots
from streamae.backtest.engine import Figures, pick, run
from streamae.backtest.evaluation import Confusion, pooled, quality
from streamae.backtest.recording import DEFAULT_KEY, Columns, read_recording
from streamae.cli import main
from streamae.settings import load_settings

KEYS, ROWS, WARMUP = ("pump-1", "pump-2"), 900, 1000  # rows per key; warm-up rows in all
FAST = {"STREAMAE_DEVICE": "cpu", "STREAMAE_MODEL__EPOCHS": "4",
        "STREAMAE_MODEL__HIDDEN_SIZES": "16", "STREAMAE_INPUT__KIND": "window",
        "STREAMAE_WINDOW__LENGTH": "4", "STREAMAE_LOG_LEVEL": "WARNING",
        "STREAMAE_METRICS_PORT": "0"}


pytestmark = pytest.mark.usefixtures("keep_logging")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    for name, value in {**FAST, "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "ck")}.items():
        monkeypatch.setenv(name, value)
    return lambda **extra: [monkeypatch.setenv(k, v) for k, v in extra.items()]


def pumps_csv(path: Path) -> np.ndarray:
    """Two pumps interleaved, 1 s apart each, three correlated channels; each pump has
    three labelled bursts after the warm-up. Returns the labels in file order."""
    rng = np.random.default_rng(1)
    lines, labels = [], []
    for i in range(ROWS):
        for k, key in enumerate(KEYS):
            base = np.sin(i / 20 + k) + 0.05 * rng.standard_normal(3)
            anomalous = i >= WARMUP // 2 and i % 120 in range(60, 64)
            values = base + (6.0 if anomalous else 0.0) * np.array([1, -1, 0.5])
            lines.append([key, 1_700_000_000_000 + 1000 * i, *values.tolist(), int(anomalous)])
            labels.append(anomalous)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["key", "ts", "a", "b", "c", "label"])
        writer.writerows(lines)
    return np.array(labels)


# -- recordings -------------------------------------------------------------------------
def test_a_csv_recording_keeps_keys_times_and_labels_out_of_the_features(tmp_path: Path):
    labels = pumps_csv(tmp_path / "p.csv")
    rec = read_recording(tmp_path / "p.csv", Columns(label="label"))
    assert rec.names == ("a", "b", "c") and rec.values.shape == (2 * ROWS, 3)
    assert rec.keys[:2] == list(KEYS) and rec.ts_ms[2] - rec.ts_ms[0] == 1000
    np.testing.assert_array_equal(rec.labels, labels)


def test_json_lines_and_npy_recordings(tmp_path: Path):
    with open(tmp_path / "r.jsonl", "w") as handle:
        for i in range(5):
            handle.write(json.dumps({"key": "k", "ts": f"2024-06-10T06:13:{20 + i}Z",
                                     "values": {"x": i, "y": -i}, "bad": i == 3}) + "\n")
    rec = read_recording(tmp_path / "r.jsonl", Columns(label="bad"))
    assert rec.names == ("x", "y") and rec.values[4].tolist() == [4, -4]
    assert rec.labels.tolist() == [False, False, False, True, False]
    assert rec.ts_ms[1] - rec.ts_ms[0] == 1000 and rec.keys == ["k"] * 5
    np.save(tmp_path / "r.npy", np.array([[1.0, 2.0, 0], [3.0, 4.0, 1]]))
    rec = read_recording(tmp_path / "r.npy", Columns(label="2"), interval_ms=500)
    assert rec.values.tolist() == [[1.0, 2.0], [3.0, 4.0]] and rec.names is None
    assert rec.labels.tolist() == [False, True] and rec.keys == [DEFAULT_KEY] * 2
    assert rec.ts_ms.tolist() == [0, 500]


# -- figures ----------------------------------------------------------------------------
def test_event_figures_count_runs_and_a_window_reach():
    labels = np.array([0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0], bool)
    flags = np.array([0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0], bool)
    q = quality(labels, flags, 0, length=2)  # the flag at 4 is within the first's reach
    assert (q.events, q.alarms, q.recall, q.precision) == (2, 2, 0.5, 0.5)
    assert q.false_per_1000 == pytest.approx(1000 / 7)  # rows 0,1,5-9,12.. outside reach
    twice = pooled([(labels, flags), (labels, flags)], 2)
    assert (twice.events, twice.recall, twice.false_per_1000) == (4, q.recall, q.false_per_1000)
    c = Confusion()
    c.add(flags, labels)
    assert (c.precision, c.recall, c.f1) == (0.0, 0.0, 0.0)


def test_pick_takes_the_most_sensitive_rate_within_the_limit():
    sweep = [Figures(r, -np.log10(r), a, 0, 2.0) for r, a in ((1e-2, 90), (1e-3, 20), (1e-4, 8))]
    assert pick(sweep, 10).rate == 1e-3  # 20 alarms over 2 days
    assert pick(sweep, 3) is None


def test_settings_to_deploy_are_env_lines_and_a_values_snippet(monkeypatch):
    monkeypatch.setenv("STREAMAE_INPUT__KIND", "window")
    monkeypatch.setenv("STREAMAE_MODEL__HIDDEN_SIZES", "16,8")
    values = deploy.changed(load_settings(), 1e-5)
    lines = deploy.env_lines(values)
    assert "STREAMAE_THRESHOLD__FALSE_ALARM_RATE=1e-05" in lines
    assert "STREAMAE_MODEL__HIDDEN_SIZES=16,8" in lines
    assert "STREAMAE_THRESHOLD__METHOD=false_alarm_rate" in lines
    config = yaml.safe_load("\n".join(deploy.helm_values(values)))["config"]
    assert config["threshold"] == {"method": "false_alarm_rate", "false_alarm_rate": 1e-5}
    assert config["model"]["hidden_sizes"] == [16, 8] and config["input"]["kind"] == "window"
    # Each line is read back by the daemon's own settings as the same value.
    for line in lines:
        name, value = line.split("=", 1)
        monkeypatch.setenv(name, value)
    assert load_settings().threshold.false_alarm_rate == 1e-5


# -- the engine and the report ------------------------------------------------------------
def test_the_sweep_at_the_configured_rate_flags_exactly_what_the_run_flagged(env, tmp_path):
    pumps_csv(tmp_path / "p.csv")
    rec = read_recording(tmp_path / "p.csv", Columns(label="label"))
    result = run(rec, load_settings(), warmup_rows=WARMUP, rates=(1e-2, 1e-4))
    assert [v.key for v in result.keys] == list(KEYS)
    at_default = result.sweep[1]
    assert (at_default.alarms, at_default.incidents) == (result.figures.alarms,
                                                         result.figures.incidents)
    assert result.sweep[0].alarms >= at_default.alarms  # a higher rate flags more
    for v in result.keys:  # each key's rows carry that key's own verdicts
        assert v.rows.tolist() == [i for i, k in enumerate(rec.keys) if k == v.key]
        assert v.first == WARMUP // 2 and np.isfinite(v.scores[v.first:]).all()
        assert v.incidents and all(s.end_ms >= s.start_ms for s in v.incidents)
    assert result.figures.quality.recall == 1.0  # 6 bursts of 6 units: all found


def test_the_report_has_a_real_png_per_key_and_the_chosen_settings(env, tmp_path, capsys):
    pumps_csv(tmp_path / "p.csv")
    out = tmp_path / "report"
    assert main(["backtest", "--input", str(tmp_path / "p.csv"), "--label-column", "label",
                 "--warmup", str(WARMUP), "--out", str(out), "--pick", "1e-3"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [plots.file_name(k) for k in KEYS]
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == (plots.WIDTH, plots.HEIGHT)
            pixels = np.asarray(image.convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # drawn, not blank
    report = (out / "report.md").read_text()
    assert "STREAMAE_THRESHOLD__FALSE_ALARM_RATE=0.001" in report
    assert "    false_alarm_rate: 0.001" in report and "STREAMAE_INPUT__KIND=window" in report
    assert f"![{pngs[0].stem}]({pngs[0].name})" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen"]["rate"] == 1e-3 and set(summary["keys"]) == set(KEYS)
    with open(out / "verdicts.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * ROWS and int(rows[-1]["row"]) == 2 * ROWS - 1


def test_without_matplotlib_the_report_says_how_to_get_the_pngs(env, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setattr(plots, "available", lambda: False)
    pumps_csv(tmp_path / "p.csv")
    out = tmp_path / "report"
    assert main(["backtest", "--input", str(tmp_path / "p.csv"), "--out", str(out),
                 "--warmup", str(WARMUP), "--max-alarms-per-day", "1e9"]) == 0
    assert not list(out.glob("*.png"))
    assert plots.INSTALL_HINT in (out / "report.md").read_text()
    assert plots.INSTALL_HINT in capsys.readouterr().out


def test_a_checkpoint_scores_the_whole_recording(env, tmp_path):
    env(STREAMAE_WINDOW__PROFILE_READINGS="0")  # the model below is trained on raw windows
    pumps_csv(tmp_path / "p.csv")
    # A window model as the cold start saves it (`streamae train` makes vector models).
    from streamae.checkpoints import save_checkpoint
    from streamae.live import calibrated_threshold, train_detector

    settings = load_settings()
    rec = read_recording(tmp_path / "p.csv", Columns(label="label"))
    windows = np.stack([rec.values[i:i + 8:2] for i in range(0, 400, 2)])  # one pump
    detector = train_detector(windows, settings.model, "cpu")
    save_checkpoint(tmp_path / "given", detector,
                    threshold_state=calibrated_threshold(settings.threshold, detector).state(),
                    metadata={"features": ["a", "b", "c"]})
    out = tmp_path / "second"
    assert main(["backtest", "--input", str(tmp_path / "p.csv"), "--out", str(out),
                 "--checkpoint", str(tmp_path / "given")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["warmup_samples"] == 0 and summary["first_row"] == 6  # 4th row of a key
