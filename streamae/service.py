"""The process around the daemon: clients from settings, topics, the last checkpoint,
the HTTP endpoints and signal handling, all held in one ``ExitStack``.

``SIGTERM``/``SIGINT`` end the loop after the batch in flight; the daemon then flushes,
commits and leaves the group, and the process exits 0 well inside Kubernetes' grace period.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable

from streamae.drift import DriftMonitor
from streamae.exceptions import AuthenticationError, InfrastructureError, SettingsError
from streamae.health import Action, HealthServer
from streamae.kafka_io import build_consumer, build_producer, ensure_topics, missing_topics
from streamae.live import ModelSlot, load_live
from streamae.messages import encode_json
from streamae.metrics import Metrics
from streamae.modelbus import ModelPublisher, ModelSubscriber, ensure_model_topic
from streamae.pipeline import Daemon, RunStats
from streamae.retrain import Retrainer
from streamae.settings import KafkaSettings, Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_MS = 10_000  # one attempt to reach the broker at start-up
RETRY_PAUSE_S = 5.0


def output_topics(settings: Settings) -> list[str]:
    kafka = settings.kafka
    topics = [kafka.output_topic, kafka.dead_letter_topic, kafka.scores_topic,
              kafka.latent_topic, kafka.drift_topic if settings.drift.enabled else None]
    return [topic for topic in topics if topic]


def compacted_topics(settings: Settings) -> list[str]:
    """The incident topics: keyed by incident id, compacted to each incident's last state."""
    kafka = settings.kafka
    return [kafka.incidents_topic, kafka.incident_state_topic] if settings.incident.enabled \
        else []


class Probes:
    """/healthz and /readyz from the first moment: 'starting' until the daemon exists."""

    def __init__(self) -> None:
        self.daemon: Daemon | None = None
        self.status = "starting"

    def liveness(self) -> tuple[bool, str]:
        return (True, self.status) if self.daemon is None else self.daemon.liveness()

    def readiness(self) -> tuple[bool, str]:
        return (False, self.status) if self.daemon is None else self.daemon.readiness()


def serve(settings: Settings, max_messages: int | None = None,
          timeout_s: float | None = None) -> RunStats:
    """The health server and signal handlers first (nothing before them can block), then
    the broker (retried within the outage budget), the model, the daemon."""
    metrics, probes, stop = Metrics(), Probes(), threading.Event()
    actions: dict[str, Action] = {}  # filled by the roles, served by the health server
    with contextlib.ExitStack() as stack:
        if settings.metrics_port:
            stack.enter_context(health_server(settings, metrics, probes, actions))
        stack.enter_context(stop_on_signals(stop))
        probes.status = f"connecting to the broker at {settings.kafka.bootstrap_servers}"
        if not connect(settings.kafka, output_topics(settings), stop,
                       compacted_topics(settings)):
            return RunStats()  # stopped while waiting for the broker
        if missing := missing_topics(settings.kafka, settings.kafka.input_topics):
            log.info("event=input_topics_missing topics=%s detail=%r", ",".join(missing),
                     "consuming starts once a producer creates them")
        slot = ModelSlot()
        if (live := load_live(settings.checkpoints.directory, settings.device,
                              settings.batch.max_size, metrics)) is not None:
            slot.swap(live)
            log.info("event=model_loaded origin=checkpoint version=%d kind=%s", live.version,
                     live.kind)
        consumer = build_consumer(settings.kafka, settings.batch.max_size)
        daemon = Daemon(settings, consumer, build_producer(settings.kafka), metrics=metrics,
                        slot=slot)
        daemon.stop_event = stop
        probes.daemon = daemon
        attach_model_roles(settings, daemon, stack, actions)
        log.info("event=daemon_started role=%s topics=%s group=%s device=%s", settings.role,
                 ",".join(settings.kafka.input_topics), settings.kafka.group_id,
                 settings.device)
        return daemon.run(max_messages=max_messages, timeout_s=timeout_s)


def health_server(settings: Settings, metrics: Metrics, probes: Probes,
                  actions: dict[str, Action]) -> HealthServer:
    """The HTTP endpoints on STREAMAE_METRICS_HOST:STREAMAE_METRICS_PORT (``actions``: the
    POST endpoints, filled in once the roles exist)."""
    host, port = settings.metrics_host, settings.metrics_port
    try:
        return HealthServer(metrics.registry, probes.liveness, probes.readiness, host=host,
                            port=port, actions=actions)
    except OSError as exc:
        raise SettingsError(f"STREAMAE_METRICS_PORT={port}: cannot listen on {host}:{port} "
                            f"({exc.strerror or exc}); is another process using it? Choose "
                            "another port, or 0 to turn the HTTP server off") from exc


def connect(kafka: KafkaSettings, topics: list[str], stop: threading.Event,
            compacted: list[str] | None = None) -> bool:
    """Reach the broker and create the output topics, retrying within the outage budget;
    False when a stop was asked for meanwhile. Authentication failures are not retried."""
    deadline = time.monotonic() + kafka.outage_budget_s
    attempt = 0
    while True:
        attempt += 1
        remaining_ms = max(1_000, int((deadline - time.monotonic()) * 1000))
        try:
            ensure_topics(kafka, topics, compacted=compacted or [],
                          timeout_ms=min(CONNECT_TIMEOUT_MS, remaining_ms))
            return True
        except AuthenticationError:
            raise
        except InfrastructureError as exc:
            log.warning("event=broker_unreachable_at_start attempt=%d bootstrap=%s "
                        "budget_left_s=%.0f error=%r", attempt, kafka.bootstrap_servers,
                        max(0.0, deadline - time.monotonic()), str(exc)[:300])
            if time.monotonic() >= deadline:
                raise InfrastructureError(
                    f"broker at {kafka.bootstrap_servers} unreachable for "
                    f"{kafka.outage_budget_s:.0f}s (STREAMAE_KAFKA__OUTAGE_BUDGET_S): {exc}"
                ) from exc
        if stop.wait(min(RETRY_PAUSE_S, max(0.0, deadline - time.monotonic()))):
            return False


def drift_sender(settings: Settings, daemon: Daemon) -> Callable[[dict], None]:
    """Drift events go to ``kafka.drift_topic`` with the daemon's producer (loop thread)."""
    def send(event: dict) -> None:
        daemon._send(settings.kafka.drift_topic, encode_json(event), b"drift")
    return send


def attach_model_roles(settings: Settings, daemon: Daemon, stack: contextlib.ExitStack,
                       actions: dict[str, Action] | None = None) -> None:
    """By role: ``trainer`` and ``all`` retrain and publish to the model topic, ``scorer``
    follows the model topic and never retrains. Every role reports drift. Everything
    closes with ``stack``."""
    retrain, kafka = settings.retrain, settings.kafka
    actions = actions if actions is not None else {}
    ensure_model_topic(kafka, retrain.model_max_bytes)
    monitor = DriftMonitor(settings.drift, daemon.metrics, drift_sender(settings, daemon),
                           follow=retrain.enabled and retrain.follow_drift
                           and settings.role != "scorer")
    daemon.scored_hooks.append(monitor.observe)
    if settings.role == "scorer":
        actions["/retrain"] = lambda: (False, "a scorer does not retrain; ask the trainer")
        subscriber = ModelSubscriber(kafka, retrain.model_max_bytes, daemon.slot,
                                     settings.device, settings.batch.max_size, daemon.metrics,
                                     kind=settings.model.kind)
        stack.callback(subscriber.close)
        subscriber.start()
        return
    publisher = ModelPublisher(kafka, retrain.model_max_bytes)
    stack.callback(publisher.close)
    retrainer = Retrainer(retrain, settings.model, settings.threshold, settings.checkpoints,
                          settings.device, daemon.slot, daemon.metrics, publisher,
                          max_batch=settings.batch.max_size)
    stack.callback(retrainer.close)  # runs before publisher.close: stack order is LIFO
    retrainer.key_profiles = daemon.decoding.key_profiles
    daemon.scored_hooks.append(retrainer.observe)
    monitor.listeners.append(retrainer.on_drift)
    retrainer.on_reanchor.append(monitor.reset)
    actions["/retrain"] = lambda: accept_recent(retrainer)


def accept_recent(retrainer: Retrainer) -> tuple[bool, str]:
    """The operator's ``POST /retrain``: learn the latest readings as normal, now."""
    if not retrainer.settings.enabled:
        return False, "retraining is disabled (STREAMAE_RETRAIN__ENABLED=false)"
    retrainer.request_regime("operator")
    return True, "retraining on recent data once the job in flight (if any) is done"


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event):  # noqa: ANN201 - a context manager
    def handle(signum: int, _frame: object) -> None:
        log.info("event=stop_requested signal=%s", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
