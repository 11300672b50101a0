"""Cold start keeps only what this consumer still owns after a rebalance."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from kafka import TopicPartition

from streamae.checkpoints import load_latest
from streamae.intake import Batch, Sample
from streamae.live import ModelSlot
from streamae.metrics import Metrics
from streamae.settings import Settings
from streamae.warmup import ColdStart

Rec = namedtuple("Rec", "topic partition offset")


def sample(partition, offset):
    return Sample(Rec("in", partition, offset), np.zeros(3, np.float32), "k", None)


class PausingConsumer:
    def __init__(self):
        self.paused_now = set()

    def assignment(self):
        return {TopicPartition("in", 0), TopicPartition("in", 1)}

    def pause(self, *tps):
        self.paused_now |= set(tps)

    def paused(self):
        return set(self.paused_now)

    def resume(self, *tps):
        self.paused_now -= set(tps)


def test_warm_up_trains_on_exactly_its_size_then_scores_everything_gathered(tmp_path):
    settings = Settings(warmup_size=40, model={"epochs": 2}, device="cpu",
                        checkpoints={"directory": tmp_path})
    cold, consumer = ColdStart(settings, ModelSlot(), Metrics()), PausingConsumer()
    rng = np.random.default_rng(0)
    batch = [Sample(Rec("in", 0, i), rng.normal(size=3).astype(np.float32), "k", None)
             for i in range(50)]

    class Decoding:
        def fix_shape(self, shape):
            self.shape = shape

        def key_profiles(self):  # window input's units per key, saved with the model
            return {"k": (np.array([5.0], np.float32), np.array([0.25], np.float32))}

    decoding = Decoding()
    assert len(cold.admit(Batch.of(batch), consumer, decoding)) == 0
    assert consumer.paused_now, "partitions are paused while the first model trains"
    cold._training.result(timeout=60)
    ready = cold.admit(Batch.empty(), consumer, decoding)
    assert len(ready) == 50 and not consumer.paused_now
    assert decoding.shape == (3,)
    assert cold.slot.live.version == 1
    saved = load_latest(tmp_path)
    assert saved.metadata["samples"] == 40
    assert saved.metadata["key_profiles"] == {"k": [[5.0], [0.25]]}
    cold.close()


def test_a_scorer_waits_for_the_trainers_model_instead_of_training(tmp_path):
    settings = Settings(role="scorer", warmup_size=10, checkpoints={"directory": tmp_path})
    slot, consumer = ModelSlot(), PausingConsumer()
    cold = ColdStart(settings, slot, Metrics())
    assert len(cold.admit(Batch.of([sample(0, i) for i in range(11)]), consumer, None)) == 0
    assert cold._training is None and consumer.paused_now == consumer.assignment()
    slot.swap(object())  # a model arrived from the model topic
    ready = cold.admit(Batch.of([sample(0, 11)]), consumer, None)
    assert [record.offset for record in ready.records] == list(range(12))
    assert not consumer.paused_now


@pytest.mark.parametrize(("kind", "shape"), [("dense", (3,)), ("conv", (1, 8, 8))])
def test_training_progress_is_logged_at_info_and_status_says_how_far(tmp_path, caplog, kind,
                                                                     shape):
    import logging
    import re

    settings = Settings(warmup_size=40, model={"kind": kind, "epochs": 3, "patience": 10},
                        device="cpu", checkpoints={"directory": tmp_path})
    cold, consumer = ColdStart(settings, ModelSlot(), Metrics()), PausingConsumer()
    rng = np.random.default_rng(1)
    batch = [Sample(Rec("in", 0, i), rng.normal(size=shape).astype(np.float32), "k", None)
             for i in range(40)]
    assert len(cold.admit(Batch.of(batch[:10]), consumer, None)) == 0
    assert cold.status() == "gathering samples for the first model: 10/40"
    with caplog.at_level(logging.INFO, logger="streamae.warmup"):
        cold.admit(Batch.of(batch[10:]), consumer, None)
        cold._training.result(timeout=60)
    assert re.fullmatch(r"training the first model: epoch=3/3 val_loss=\S+ elapsed_s=\d+ "
                        r"left_s=0", cold.status())
    lines = [r.getMessage() for r in caplog.records if "training_progress" in r.getMessage()]
    assert lines and "epoch=1/3" in lines[0]  # the first epoch always, then every 10 s
    assert all(r.levelno == logging.INFO for r in caplog.records
               if "training_progress" in r.getMessage())
    cold.close()
