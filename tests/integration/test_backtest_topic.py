"""``streamae backtest --topic``: a range of a real topic replays as the same file would."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streamae.backtest.recording import Columns
from streamae.backtest.topic import TopicRange, read_topic_recording
from streamae.cli import main
from streamae.exceptions import StreamaeError
from streamae.settings import KafkaSettings
from tests.unit.test_backtest import FAST, WARMUP, pumps_csv

pytestmark = pytest.mark.usefixtures("keep_logging")


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def produce_rows(bootstrap: str, topic: str, rows: list[dict[str, str]],
                 poison_every: int = 0, by_key: bool = False) -> None:
    """Each CSV row as the daemon's JSON message, broker timestamp = its ts; with
    ``poison_every`` a record that is no input message after every so many rows; with
    ``by_key`` pump-N goes to partition N-1."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for i, row in enumerate(rows):
        body = {"ts": int(row["ts"]), "label": int(row["label"]),
                "values": {name: float(row[name]) for name in ("a", "b", "c")}}
        partition = int(row["key"].split("-")[1]) - 1 if by_key else None
        producer.send(topic, key=row["key"].encode(), value=json.dumps(body).encode(),
                      timestamp_ms=int(row["ts"]), partition=partition)
        if poison_every and i % poison_every == poison_every - 1:
            producer.send(topic, key=b"pump-1", value=b"\x00 not json",
                          timestamp_ms=int(row["ts"]))
    producer.flush(timeout=60)
    producer.close()


def test_a_topic_range_gives_the_verdicts_of_the_same_rows_from_a_file(
        kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**FAST, "STREAMAE_CHECKPOINTS__DIRECTORY": str(tmp_path / "ck"),
                        "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap}.items():
        monkeypatch.setenv(name, value)
    pumps_csv(tmp_path / "p.csv")
    topic = make_topic("recorded")
    produce_rows(kafka_bootstrap, topic, csv_rows(tmp_path / "p.csv"), poison_every=500)
    common = ["--label-column", "label", "--warmup", str(WARMUP), "--max-plots", "0"]
    assert main(["backtest", "--input", str(tmp_path / "p.csv"), "--out",
                 str(tmp_path / "file"), *common]) == 0
    assert main(["backtest", "--topic", topic, "--out", str(tmp_path / "topic"),
                 *common]) == 0
    from_file = (tmp_path / "file" / "verdicts.csv").read_text()
    from_topic = (tmp_path / "topic" / "verdicts.csv").read_text()
    assert from_file.count("\n") > 1000 and from_topic == from_file


def test_offset_and_time_bounds_are_inclusive_on_every_partition(
        kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path) -> None:
    pumps_csv(tmp_path / "p.csv")
    rows = csv_rows(tmp_path / "p.csv")[:400]
    topic = make_topic("recorded", partitions=2)
    produce_rows(kafka_bootstrap, topic, rows, by_key=True)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    columns = Columns(label="label")
    everything = read_topic_recording(kafka, TopicRange(topic), columns)
    assert len(everything) == 400 and sorted(everything.ts_ms) == list(everything.ts_ms)
    assert everything.labels is not None and set(everything.keys) == {"pump-1", "pump-2"}
    ts = sorted({int(r["ts"]) for r in rows})
    window = read_topic_recording(kafka, TopicRange(topic, from_ms=ts[10], to_ms=ts[19]),
                                  columns)
    assert len(window) == 20 and window.ts_ms.min() == ts[10] and window.ts_ms.max() == ts[19]
    by_offset = read_topic_recording(kafka, TopicRange(topic, from_offset=5, to_offset=9),
                                     columns)
    assert len(by_offset) == 10  # offsets 5..9 of both partitions
    with pytest.raises(StreamaeError, match="no JSON input message"):
        read_topic_recording(kafka, TopicRange(topic, from_offset=10_000), columns)
    with pytest.raises(StreamaeError, match="not found"):
        read_topic_recording(kafka, TopicRange("no-such-topic-ever"), columns)
