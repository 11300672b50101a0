"""Checkpoints arriving on the model topic are checked before use: each bad kind is logged,
counted by reason and skipped; the good one after them goes live (real broker)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from kafka import KafkaProducer

from streamae.checkpoints import checkpoint_to_bytes
from streamae.live import LiveModel, ModelSlot
from streamae.metrics import Metrics
from streamae.modelbus import CONTENT_TYPE, KEY, VERSION_HEADER, ModelSubscriber
from streamae.scoring import Scorer
from streamae.settings import KafkaSettings
from streamae.thresholds import build_threshold
from streamae.training import TrainConfig, fit
from tests.integration.conftest import BOTH_CLIENTS
from tests.integration.odd_records import NullValue, null_header_values

pytestmark = pytest.mark.integration

ARGS = {"hidden_sizes": [4], "latent_size": 2}


def detector(width: int = 8, kind: str = "dense"):
    data = np.random.default_rng(width).normal(size=(40, width)).astype(np.float32)
    return fit(data, kind, ARGS, TrainConfig(epochs=1), device="cpu")


def blob(det, version: int) -> bytes:
    return checkpoint_to_bytes(det, {"method": "static", "value": 3.0}, {}, version)


def poisoned(version: int) -> bytes:
    det = detector()
    with torch.no_grad():
        next(det.model.parameters()).view(-1)[0] = float("nan")
    return blob(det, version)


@BOTH_CLIENTS
def test_bad_checkpoints_on_the_model_topic_are_rejected_and_the_good_one_loads(
        kafka_client, kafka_bootstrap, make_topic):
    topic = make_topic("models", compacted=False)
    good, running = detector(), detector()
    versioned = [  # every bad one newer than the good version 6, so each is tried
        (blob(detector(width=3), 7), b"7", "wrong_shape"),
        (blob(detector(kind="vae"), 8), b"8", "wrong_kind"),
        (poisoned(9), b"9", "non_finite"),
        (b"not a checkpoint", b"10", "corrupt"),
        (blob(good, 6), b"11", "version_mismatch"),
        (blob(good, 12), None, "no_version"),  # a null header value
        (blob(good, 13), b"thirteen", "no_version"),
        (blob(good, 14), b"\xd9\xa3", "no_version"),  # an Arabic-Indic digit
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=8_000_000)
    with null_header_values():
        for value, version, _ in versioned:
            header = NullValue(VERSION_HEADER) if version is None else (VERSION_HEADER, version)
            producer.send(topic, key=KEY, value=value, headers=[header, CONTENT_TYPE])
        producer.send(topic, key=KEY, value=blob(good, 6),
                      headers=[(VERSION_HEADER, b"6"), CONTENT_TYPE])
    producer.flush()
    producer.close()

    slot, metrics = ModelSlot(), Metrics()
    threshold = build_threshold("static", value=3.0, quantile=0.99, window=100, min_samples=10)
    slot.swap(LiveModel(Scorer(running, "cpu"), threshold, 1))
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, model_topic=topic, client=kafka_client,
                          client_id=f"t-{uuid.uuid4().hex[:6]}")
    subscriber = ModelSubscriber(kafka, 8_000_000, slot, "cpu", 64, metrics, kind="dense")
    try:
        subscriber.start(catch_up_s=20)
    finally:
        subscriber.close()

    assert slot.live.version == 6 and subscriber.loaded == 6
    expected: dict[str, int] = {}
    for _, _, reason in versioned:
        expected[reason] = expected.get(reason, 0) + 1
    for reason, count in expected.items():
        value = metrics.registry.get_sample_value("streamae_models_rejected_total",
                                                  {"reason": reason})
        assert value == count, reason
