"""Every Prometheus metric streamae exports, in one bundle built against a given registry.

Tests build the bundle on a fresh ``CollectorRegistry`` and read values back with
``registry.get_sample_value``. Labels are bounded: never a message key.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# Scoring a batch on CPU takes from ~0.1 ms (tiny dense model) to ~1 s (large images);
# buckets are spaced about 2.5x apart over that range.
SCORING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)
# End to end (broker timestamp to publish) is dominated by batching (max wait 100 ms by
# default) and by consumer lag, which can reach minutes after a restart.
END_TO_END_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# A retrain runs from seconds (small dense model) to tens of minutes (large conv models).
RETRAIN_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The bundle; one instance per daemon."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.consumed = Counter("streamae_messages_consumed", "Messages polled from Kafka",
                                registry=r)
        self.scored = Counter("streamae_messages_scored", "Samples scored by the model",
                              registry=r)
        self.anomalies = Counter("streamae_anomalies", "Anomaly events published", registry=r)
        self.dead_letters = Counter("streamae_dead_letters", "Messages sent to the dead-letter "
                                    "topic", ["reason"], registry=r)
        self.scoring_seconds = Histogram("streamae_scoring_seconds", "Model time per batch",
                                         buckets=SCORING_BUCKETS, registry=r)
        self.end_to_end_seconds = Histogram(
            "streamae_end_to_end_seconds", "Broker timestamp to publish acknowledged",
            buckets=END_TO_END_BUCKETS, registry=r)
        self.batch_size = Histogram("streamae_batch_size", "Messages per processed batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.consumer_lag = Gauge("streamae_consumer_lag_messages", "Messages behind the end "
                                  "of each assigned partition", ["topic", "partition"],
                                  registry=r)
        self.threshold = Gauge("streamae_threshold", "Threshold in force on the score",
                               registry=r)
        self.model_version = Gauge("streamae_model_version", "Version of the live model",
                                   registry=r)
        self.model_info = Info("streamae_model", "Kind and version of the live model",
                               registry=r)
        self.windows_evicted = Counter("streamae_windows_evicted_keys", "Keys evicted from "
                                       "the window builder", registry=r)
        self.late_readings = Counter("streamae_late_readings", "Out-of-order readings",
                                     ["policy"], registry=r)
        self.retrains = Counter("streamae_retrains", "Retrains by outcome", ["outcome"],
                                registry=r)
        self.retrain_seconds = Histogram("streamae_retrain_seconds", "Duration of a retrain",
                                         buckets=RETRAIN_BUCKETS, registry=r)
        self.train_loss = Gauge("streamae_train_loss", "Training loss of the last fit",
                                registry=r)
        self.validation_loss = Gauge("streamae_validation_loss", "Validation loss of the "
                                     "last fit", registry=r)
        self.buffer_windows = Gauge("streamae_buffer_windows", "Windows in the replay buffer",
                                    registry=r)
        self.buffer_bytes = Gauge("streamae_buffer_bytes", "Bytes in the replay buffer",
                                  registry=r)
        self.rollbacks = Counter("streamae_rollbacks", "Promotions rolled back", registry=r)
        self.drift_events = Counter("streamae_drift_events", "Sustained shifts of the data "
                                    "detected (streamae.drift/v1 events)", registry=r)
        self.drift_active = Gauge("streamae_drift_active", "1 from a detected drift until a "
                                  "retrain on the new regime", registry=r)
        # Severity is `warning` or `critical` (streamae.incidents.SEVERITIES): bounded.
        self.incidents_open = Gauge("streamae_incidents_open", "Incidents open now",
                                    ["severity"], registry=r)
        self.incidents_opened = Counter("streamae_incidents_opened", "Incidents opened, by "
                                        "severity when opened", ["severity"], registry=r)
        self.incidents_resolved = Counter("streamae_incidents_resolved", "Incidents resolved, "
                                          "by reason (quiet or stale)", ["reason"], registry=r)
        self.models_rejected = Counter("streamae_models_rejected", "Checkpoints (model topic "
                                       "or disk) refused before use, by reason", ["reason"],
                                       registry=r)

    def set_model(self, kind: str, version: int) -> None:
        self.model_version.set(version)
        self.model_info.info({"kind": kind, "version": str(version)})


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """Observe every value at once: what ``observe`` does per value (bucket counts and
    sum), one increment per bucket; the daemon observes latency for every message."""
    if not len(values):
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    if bounds is None or buckets is None:  # another client version: one at a time
        for value in values.tolist():
            histogram.observe(value)
        return
    # observe() counts a value in the first bucket whose bound is >= it
    counts = np.bincount(np.searchsorted(np.asarray(bounds), values, side="left"),
                         minlength=len(bounds))
    histogram._sum.inc(float(values.sum()))
    for i in np.flatnonzero(counts[:len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))
