"""The process around the daemon: clients from settings, topics, the last checkpoint,
the HTTP endpoints and signal handling, all held in one ``ExitStack``.

``SIGTERM``/``SIGINT`` end the loop after the batch in flight; the daemon then flushes,
commits and leaves the group, and the process exits 0 well inside Kubernetes' grace period.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable

from streamae.drift import DriftMonitor
from streamae.health import Action, HealthServer
from streamae.kafka_io import build_consumer, build_producer, ensure_topics, missing_topics
from streamae.live import ModelSlot, load_live
from streamae.messages import encode_json
from streamae.metrics import Metrics
from streamae.modelbus import ModelPublisher, ModelSubscriber, ensure_model_topic
from streamae.pipeline import Daemon, RunStats
from streamae.retrain import Retrainer
from streamae.settings import Settings

log = logging.getLogger(__name__)


def output_topics(settings: Settings) -> list[str]:
    kafka = settings.kafka
    topics = [kafka.output_topic, kafka.dead_letter_topic, kafka.scores_topic,
              kafka.latent_topic, kafka.drift_topic if settings.drift.enabled else None]
    return [topic for topic in topics if topic]


def serve(settings: Settings, max_messages: int | None = None,
          timeout_s: float | None = None) -> RunStats:
    ensure_topics(settings.kafka, output_topics(settings),
                  compacted=[settings.kafka.incidents_topic,
                             settings.kafka.incident_state_topic]
                  if settings.incident.enabled else [])
    if missing := missing_topics(settings.kafka, settings.kafka.input_topics):
        log.info("event=input_topics_missing topics=%s detail=%r", ",".join(missing),
                 "consuming starts once a producer creates them")
    slot = ModelSlot()
    if (live := load_live(settings.checkpoints.directory, settings.device,
                          settings.batch.max_size)) is not None:
        slot.swap(live)
        log.info("event=model_loaded origin=checkpoint version=%d kind=%s", live.version,
                 live.kind)
    metrics = Metrics()
    consumer = build_consumer(settings.kafka, settings.batch.max_size)
    daemon = Daemon(settings, consumer, build_producer(settings.kafka), metrics=metrics,
                    slot=slot)
    actions: dict[str, Action] = {}  # filled by the roles, served by the health server
    with contextlib.ExitStack() as stack:
        if settings.metrics_port:
            stack.enter_context(HealthServer(metrics.registry, daemon.liveness,
                                             daemon.readiness, port=settings.metrics_port,
                                             actions=actions))
        stack.enter_context(stop_on_signals(daemon))
        attach_model_roles(settings, daemon, stack, actions)
        log.info("event=daemon_started role=%s topics=%s group=%s device=%s", settings.role,
                 ",".join(settings.kafka.input_topics), settings.kafka.group_id,
                 settings.device)
        return daemon.run(max_messages=max_messages, timeout_s=timeout_s)


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
                                     settings.device, settings.batch.max_size, daemon.metrics)
        stack.callback(subscriber.close)
        subscriber.start()
        return
    publisher = ModelPublisher(kafka, retrain.model_max_bytes)
    stack.callback(publisher.close)
    retrainer = Retrainer(retrain, settings.model, settings.threshold, settings.checkpoints,
                          settings.device, daemon.slot, daemon.metrics, publisher,
                          max_batch=settings.batch.max_size)
    stack.callback(retrainer.close)  # runs before publisher.close: stack order is LIFO
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
def stop_on_signals(daemon: Daemon):  # noqa: ANN201 - a context manager
    def handle(signum: int, _frame: object) -> None:
        log.info("event=stop_requested signal=%s", signal.Signals(signum).name)
        daemon.stop_event.set()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
