"""/metrics, /healthz and /readyz answer what the probes and Prometheus expect."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from streamae.health import HealthServer
from streamae.metrics import Metrics


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def server():
    metrics = Metrics()
    state = {"ready": (False, "no model yet")}
    with HealthServer(metrics.registry, live=lambda: (True, "ok"),
                      ready=lambda: state["ready"], host="127.0.0.1", port=0) as srv:
        yield srv, metrics, state


def test_metrics_endpoint_exports_the_bundle(server):
    srv, metrics, _ = server
    metrics.consumed.inc(3)
    metrics.dead_letters.labels(reason="invalid_json").inc()
    status, body = get(srv.port, "/metrics")
    assert status == 200
    assert "streamae_messages_consumed_total 3.0" in body
    assert 'streamae_dead_letters_total{reason="invalid_json"} 1.0' in body


def test_readiness_follows_the_probe(server):
    srv, _, state = server
    assert get(srv.port, "/healthz")[0] == 200
    status, body = get(srv.port, "/readyz")
    assert status == 503 and "no model yet" in body
    state["ready"] = (True, "model dense v1")
    assert get(srv.port, "/readyz") == (200, "ok: model dense v1\n")
    assert get(srv.port, "/nope")[0] == 404


def test_fresh_registries_do_not_collide():
    first, second = Metrics(), Metrics()
    first.anomalies.inc()
    assert second.registry.get_sample_value("streamae_anomalies_total") == 0


def post(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_operator_actions_are_posts_filled_in_after_start():
    actions = {}
    calls = []
    with HealthServer(Metrics().registry, live=lambda: (True, "ok"),
                      ready=lambda: (True, "ok"), host="127.0.0.1", port=0,
                      actions=actions) as srv:
        assert post(srv.port, "/retrain")[0] == 404  # nothing registered yet
        actions["/retrain"] = lambda: (calls.append(1) or True, "retraining")
        assert post(srv.port, "/retrain") == (202, "retraining\n")
        actions["/retrain"] = lambda: (False, "a scorer does not retrain")
        assert post(srv.port, "/retrain")[0] == 409
    assert calls == [1]


def test_observe_many_counts_as_observing_each_value():
    import numpy as np
    from prometheus_client import CollectorRegistry, Histogram

    from streamae.metrics import observe_many

    values = np.array([0.0, 0.004, 0.005, 0.2, 7.0, 1e9, 0.005000001])
    one, many = CollectorRegistry(), CollectorRegistry()
    buckets = (0.005, 0.1, 1.0, 10.0)
    each = Histogram("lat_seconds", "x", buckets=buckets, registry=one)
    for value in values:
        each.observe(float(value))
    observe_many(Histogram("lat_seconds", "x", buckets=buckets, registry=many), values)
    for le in ("0.005", "0.1", "1.0", "10.0", "+Inf"):
        assert many.get_sample_value("lat_seconds_bucket", {"le": le}) == \
            one.get_sample_value("lat_seconds_bucket", {"le": le})
    assert many.get_sample_value("lat_seconds_sum") == pytest.approx(
        one.get_sample_value("lat_seconds_sum"))
    assert many.get_sample_value("lat_seconds_count") == len(values)
