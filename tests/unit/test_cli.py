"""``streamae encode`` and ``streamae sample`` through ``cli.main``, on real checkpoints."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamae.checkpoints import save_checkpoint
from streamae.cli import main
from streamae.latents import LATENT_SCHEMA, windows_of
from streamae.training import TrainConfig, fit

FEATURES = ["a", "b", "c", "d", "e", "f"]
ROWS, LATENT = 300, 3


pytestmark = pytest.mark.usefixtures("keep_logging")


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """Six correlated features driven by two factors, plus a text column to ignore."""
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((ROWS, 2))
    values = factors @ rng.standard_normal((2, 6)) + 0.05 * rng.standard_normal((ROWS, 6))
    path = tmp_path / "data.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", *FEATURES])
        writer.writerows([f"t{i}", *map(float, row)] for i, row in enumerate(values))
    return path


@pytest.fixture
def streamae(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., int]:
    """Run ``streamae ARGS`` in process with a tiny, fast model configuration."""
    env = {"STREAMAE_DEVICE": "cpu", "STREAMAE_MODEL__EPOCHS": "3",
           "STREAMAE_MODEL__HIDDEN_SIZES": "16", "STREAMAE_MODEL__LATENT_SIZE": str(LATENT),
           "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "ck"),
           "STREAMAE_THRESHOLD__MIN_SAMPLES": "10", "STREAMAE_LOG_LEVEL": "WARNING"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def run(*args: str, **extra: str) -> int:
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        return main([str(a) for a in args])

    return run


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as handle:
        header, *rows = list(csv.reader(handle))
    return header, np.array(rows, dtype=np.float64)


def test_encode_and_sample_a_trained_vae(streamae, table, tmp_path):
    assert streamae("train", "--input", table, STREAMAE_MODEL__KIND="vae") == 0
    assert streamae("encode", "--input", table, "--out", tmp_path / "z.npy") == 0
    latents = np.load(tmp_path / "z.npy")
    assert latents.shape == (ROWS, LATENT) and np.all(np.isfinite(latents))

    assert streamae("encode", "--input", table, "--out", tmp_path / "z.csv") == 0
    header, rows = read_csv(tmp_path / "z.csv")
    assert header == ["z0", "z1", "z2"]
    np.testing.assert_allclose(rows, latents, rtol=1e-4, atol=1e-5)

    assert streamae("sample", "--n", "50", "--out", tmp_path / "s.npy", "--seed", "1") == 0
    drawn = np.load(tmp_path / "s.npy")
    assert drawn.shape == (50, len(FEATURES)) and np.all(np.isfinite(drawn))
    assert streamae("sample", "--n", "50", "--out", tmp_path / "s.csv", "--seed", "1") == 0
    header, rows = read_csv(tmp_path / "s.csv")
    assert header == FEATURES and rows.shape == (50, len(FEATURES))
    np.testing.assert_allclose(rows, drawn, rtol=1e-4, atol=1e-4)  # same seed, same draws
    assert streamae("sample", "--n", "50", "--out", tmp_path / "t.npy", "--seed", "2") == 0
    assert not np.allclose(np.load(tmp_path / "t.npy"), drawn)


def test_sample_refuses_a_model_that_is_not_variational(streamae, table, tmp_path):
    assert streamae("train", "--input", table, STREAMAE_MODEL__KIND="dense") == 0
    assert streamae("sample", "--out", tmp_path / "s.npy") == 1
    assert not (tmp_path / "s.npy").exists()


def test_encode_needs_a_checkpoint_and_a_destination(streamae, table, tmp_path):
    assert streamae("encode", "--input", table, "--out", tmp_path / "z.npy") == 1  # none yet
    assert streamae("train", "--input", table) == 0
    assert streamae("encode", "--input", table) == 1  # neither --out nor a topic


def save_fitted(directory: Path, data: np.ndarray, kind: str, metadata: dict | None = None,
                **args: object) -> None:
    config = TrainConfig(epochs=2, batch_size=32)
    detector = fit(data, kind, {"hidden_sizes": (8,), "latent_size": LATENT, **args}, config,
                   device="cpu")
    save_checkpoint(directory, detector, threshold_state={"method": "static", "value": 3.0},
                    metadata={"origin": "test", "features": FEATURES, **(metadata or {})})


def test_encode_builds_windows_from_csv_rows_for_a_window_model(streamae, table, tmp_path):
    rows = np.loadtxt(table, delimiter=",", skiprows=1, usecols=range(1, 7), dtype=np.float32)
    save_fitted(tmp_path / "ck", windows_of(rows, 8), "conv1d")
    assert streamae("encode", "--input", table, "--stride", "2",
                    "--out", tmp_path / "z.npy") == 0
    assert np.load(tmp_path / "z.npy").shape == ((ROWS - 8) // 2 + 1, LATENT)


def test_encode_reads_npy_images(streamae, tmp_path):
    images = np.random.default_rng(1).random((40, 8, 8)).astype(np.float32)
    save_fitted(tmp_path / "ck", images[:, None], "conv", noise_std=0.0,
                mask_probability=0.0)
    np.save(tmp_path / "images.npy", images)  # (N, H, W): the grey channel is implied
    assert streamae("encode", "--input", tmp_path / "images.npy",
                    "--out", tmp_path / "z.npy") == 0
    assert np.load(tmp_path / "z.npy").shape == (40, LATENT)
    np.save(tmp_path / "wrong.npy", images[:, :4])
    assert streamae("encode", "--input", tmp_path / "wrong.npy",
                    "--out", tmp_path / "z.npy") == 1


def test_windows_of_matches_the_daemon_window_builder():
    from streamae.windows import WindowBuilder

    rows = np.arange(30, dtype=np.float32).reshape(10, 3)
    builder = WindowBuilder(4, stride=3)
    built = [w.values for row in rows for w in builder.push("k", None, row)]
    np.testing.assert_array_equal(windows_of(rows, 4, 3), np.stack(built))


@pytest.mark.integration
def test_encode_publishes_to_the_latent_topic(streamae, table, kafka_bootstrap, make_topic):
    from kafka import KafkaConsumer

    topic = make_topic("latents")
    assert streamae("train", "--input", table) == 0
    assert streamae("encode", "--input", table, "--to-topic",
                    STREAMAE_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap,
                    STREAMAE_KAFKA__LATENT_TOPIC=topic) == 0
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    records = [json.loads(r.value) for r in consumer]
    consumer.close()
    assert len(records) == ROWS
    assert [r["row"] for r in records] == list(range(ROWS))
    assert records[0]["schema"] == LATENT_SCHEMA and len(records[0]["latent"]) == LATENT
    assert records[0]["model_version"] == 1 and records[0]["model_kind"] == "dense"


def _options(parser):
    """(command, option, help) of every option of every command, the top level included."""
    import argparse

    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(name, *rest) for _, *rest in _options(sub)]
        elif action.option_strings and not isinstance(action, argparse._HelpAction):
            found.append(("streamae", action.option_strings[0], action.help))
    return found


def test_every_option_has_a_help_line_but_the_deprecated_alias():
    from streamae.cli import parser

    options = _options(parser())
    assert len(options) > 20
    missing = [(cmd, opt) for cmd, opt, text in options if not text]
    assert missing == []
    hidden = {(cmd, opt) for cmd, opt, text in options if text == "==SUPPRESS=="}
    assert hidden == {("train", "--csv"), ("score", "--csv"), ("encode", "--csv")}


def test_top_level_help_is_whole_sentences(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    description = text.split("\n\n")[1]
    assert description.rstrip().endswith(".") and "``" not in description
    for command in ("run", "demo", "train", "score", "encode", "sample", "backtest"):
        assert f"    {command} " in text


def test_one_input_flag_for_every_command_and_csv_still_accepted(streamae, table, tmp_path,
                                                                 capsys):
    assert streamae("train", "--csv", table) == 0
    assert "--csv is deprecated, use --input" in capsys.readouterr().err
    assert streamae("score", "--input", table, "--out", tmp_path / "s.csv") == 0
    header, rows = read_csv(tmp_path / "s.csv")
    assert header == ["row", "score", "threshold", "anomaly"] and len(rows) == ROWS
    with pytest.raises(SystemExit) as exited:
        streamae("score", "--out", tmp_path / "t.csv")
    assert exited.value.code == 2
    assert "required: --input" in capsys.readouterr().err


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_a_missing_input_topic_is_not_an_error_in_the_log(capsys, level, shown):
    from streamae.cli import configure_logging

    configure_logging(level)
    logging.getLogger("kafka.cluster").error("Topic %s not found in cluster metadata", "in")
    logging.getLogger("kafka.cluster").error("Topic %s is not authorized for this client", "x")
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if "not found" in line and "error" in line]
    assert ("level=debug logger=kafka.cluster Topic in not found" in err) == shown
    assert "level=error logger=kafka.cluster Topic x is not authorized" in err


def test_the_clients_slow_step_diagnostic_is_not_a_warning_in_the_log(capsys):
    from streamae.cli import configure_logging

    configure_logging("INFO")
    selector = logging.getLogger("kafka.net.selector")
    # as kafka-python 3 logs it: the message formatted beforehand
    selector.warning("Task <kafka.net.selector.Task object at 0x7f> ran for 0.136s (>0.100s "
                     "threshold). It is blocking the event loop -- likely a tight sync loop "
                     "inside a coroutine. Other pollers will time out.")
    selector.warning("Task %s left RUNNING after step; demoting to UNSCHEDULED", "t")
    err = capsys.readouterr().err
    assert "blocking the event loop" not in err
    assert "level=warning logger=kafka.net.selector Task t left RUNNING" in err


class FakeTransport:
    def __init__(self, closed: bool) -> None:
        self.closed = closed

    def __str__(self) -> str:  # as kafka-python 3's KafkaTCPTransport
        return f"<KafkaTCPTransport [localhost:9092]{' (closed)' if self.closed else ''}>"


def test_a_receive_error_on_a_closed_socket_is_not_an_error_in_the_log(capsys):
    from streamae.cli import configure_logging

    configure_logging("INFO")
    transport = logging.getLogger("kafka.net.transport")
    for closed in (True, False):
        try:
            None.recv(4096)  # type: ignore[attr-defined]  # the race in the client's close
        except AttributeError:
            transport.exception("%s: Error receiving network data closing socket",
                                FakeTransport(closed))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "level=error" in line]
    assert len(errors) == 1 and "[localhost:9092]>" in errors[0], err
    assert "(closed)" not in err


def test_retrain_accept_recent_posts_to_the_daemon(monkeypatch, capsys):
    from streamae.health import HealthServer
    from streamae.metrics import Metrics

    asked = []
    actions = {"/retrain": lambda: (asked.append(True) or True, "retraining on recent data")}
    with HealthServer(Metrics().registry, live=lambda: (True, "ok"), ready=lambda: (True, "ok"),
                      host="127.0.0.1", port=0, actions=actions) as srv:
        monkeypatch.setenv("STREAMAE_METRICS_PORT", str(srv.port))
        assert main(["retrain", "--accept-recent"]) == 0
    assert asked == [True] and "retraining on recent data" in capsys.readouterr().out


def test_encode_reads_a_window_models_rows_in_their_own_units(streamae, table, tmp_path):
    """As the daemon does for a key, a CSV's first rows fix its units when the model was
    trained in key units: the same recording in another unit (x1000, offset) encodes to the
    same latents."""
    rows = np.loadtxt(table, delimiter=",", skiprows=1, usecols=range(1, 7), dtype=np.float32)
    save_fitted(tmp_path / "ck", windows_of(rows, 8), "conv1d", {"key_profiles": {}})
    other = tmp_path / "other.csv"
    with open(other, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time", *FEATURES])
        writer.writerows([f"t{i}", *map(float, 1000 * row + 5)] for i, row in enumerate(rows))
    for source, out in ((table, "a.npy"), (other, "b.npy")):
        assert streamae("encode", "--input", source, "--out", tmp_path / out) == 0
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"),
                               atol=1e-3)
