"""Drift detection: Page-Hinkley on exceedances, the drift event, regime stability."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from streamae.drift import DRIFT_SCHEMA, DriftMonitor, PageHinkley, stable
from streamae.metrics import Metrics
from streamae.settings import DriftSettings


def test_page_hinkley_signals_a_rise_batched_or_one_at_a_time():
    rng = np.random.default_rng(0)
    x = rng.random(3_000) < np.r_[np.full(2_000, 0.02), np.full(1_000, 0.6)]
    batched, single = PageHinkley(0.005, 50, 30), PageHinkley(0.005, 50, 30)
    at_batched = next(i for i in range(0, 3_000, 100) if batched.update(x[i : i + 100]))
    at_single = next(i for i in range(3_000) if single.update(x[i : i + 1]))
    assert 2_000 <= at_single < 2_200
    assert abs(at_batched - at_single) <= 100
    assert batched.count == 0  # reset after the signal


def test_page_hinkley_ignores_bursts_below_its_threshold():
    detector = PageHinkley(0.005, 500, 1_000)
    rng = np.random.default_rng(1)
    for _ in range(200):  # 51,200 readings: 6% in bursts of 40 flagged readings
        batch = rng.random(256) < 0.02
        if rng.random() < 0.3:
            batch[:40] = 1.0
        assert not detector.update(batch)


def test_monitor_publishes_a_drift_event_and_counts_it():
    metrics = Metrics(CollectorRegistry())
    sent, heard = [], []
    monitor = DriftMonitor(DriftSettings(threshold=100, min_instances=200), metrics, sent.append)
    monitor.listeners.append(heard.append)
    for _ in range(10):
        monitor.observe(None, None, np.full(256, 0.3), np.zeros(256, bool))
    assert not sent
    for _ in range(3):
        monitor.observe(None, None, np.full(256, 6.0), np.ones(256, bool))
    assert len(sent) == 1 and heard == sent
    event = sent[0]
    assert event["schema"] == DRIFT_SCHEMA and event["action"] == "keep_alarming"
    assert metrics.registry.get_sample_value("streamae_drift_events_total") == 1
    assert metrics.registry.get_sample_value("streamae_drift_active") == 1


def test_stable_once_the_mean_stops_moving():
    rng = np.random.default_rng(2)
    ramp = rng.normal(size=(4_000, 8)) + np.linspace(0, 4, 4_000)[:, None]
    held = rng.normal(size=(4_000, 8)) + 4.0
    assert not stable(ramp, 2_000, 0.25)
    assert stable(held, 2_000, 0.25)
    assert not stable(held[:3_000], 2_000, 0.25)  # too few readings to tell


def test_reset_after_a_learnt_regime_starts_afresh():
    metrics = Metrics(CollectorRegistry())
    monitor = DriftMonitor(DriftSettings(threshold=1_000, min_instances=200), metrics)
    monitor.observe(None, None, np.full(256, 6.0), np.ones(256, bool))
    monitor.metrics.drift_active.set(1)
    monitor.reset()
    assert monitor.detector.count == 0
    assert metrics.registry.get_sample_value("streamae_drift_active") == 0
