"""The daemon loop: the one place where settings, Kafka and the model parts meet.

Each turn of the loop is a short list of named steps::

    poll -> (restore incidents) -> decode/window -> dead-letter bad input -> (cold start)
         -> score -> threshold -> publish anomalies and incidents -> seal the turn
         -> mark the offsets of acknowledged turns done -> commit

An offset is committed only after everything it produced was acknowledged by the broker
(at least once). The loop does not wait for acks per batch: a turn's acks arrive through
the producer's callbacks while the next batch is polled and scored, and at most
``MAX_TURNS_IN_FLIGHT`` turns wait unacknowledged. The live model is read once per batch,
so a swap never splits a batch.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from streamae.alerts import AnomalyLog, build_event, explain, mode_deviations, spread_changes
from streamae.delivery import Delivery
from streamae.exceptions import InfrastructureError
from streamae.incident_feed import IncidentFeed
from streamae.incidents import feature_names
from streamae.intake import Batch, Decoding, Sample
from streamae.kafka_io import (
    OffsetTracker,
    commit,
    consumer_lag,
    poll_available,
    security_config,
)
from streamae.live import LiveModel, ModelSlot
from streamae.messages import encode_json, score_batches, score_records
from streamae.metrics import Metrics, observe_many
from streamae.settings import Settings
from streamae.thresholds import classify_and_learn
from streamae.unreadable import UnreadableError, UnreadableRecord, UnreadableRecords, locate
from streamae.warmup import ColdStart

log = logging.getLogger(__name__)

LAG_EVERY_S = 5.0
SHUTDOWN_BUDGET_S = 15.0  # waiting for acks on a stop (Kubernetes' grace period is 30 s)
PROBE_TIMEOUT_MS = 2_000  # one broker round trip that says whether it is reachable
REJOIN_AFTER_S = 20.0
POLL_RETRY_S = 1.0  # the pause after a poll that raised, before the next turn polls again
# Turns sent and not yet acknowledged before the loop waits: bounds what is polled ahead
# of the broker's acks (memory, and what a crash makes the next owner consume again).
MAX_TURNS_IN_FLIGHT = 1
# What a SIGKILL can make the next owner consume again, in turns: the one being scored
# and the turns sealed before it that are either waiting for acks or acknowledged with
# their commit in flight (at most MAX_TURNS_IN_FLIGHT + 1: a turn with offsets to commit
# first waits for the answer to the commit in flight; see kafka_io.commit).
REDELIVERED_TURNS = MAX_TURNS_IN_FLIGHT + 2
# Called after each scored batch with (live model, inputs, normalised scores, flags).
ScoredHook = Callable[[LiveModel, np.ndarray, np.ndarray, np.ndarray], None]


@dataclass
class RunStats:
    consumed: int = 0
    scored: int = 0
    anomalies: int = 0
    dead_letters: int = 0


class Daemon:
    """Consume, score, publish, commit; ``run`` returns when stopped or a bound is hit."""

    def __init__(self, settings: Settings, consumer: KafkaConsumer, producer: KafkaProducer,
                 *, metrics: Metrics | None = None, slot: ModelSlot | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.consumer, self.producer = consumer, producer
        self.metrics = metrics if metrics is not None else Metrics()
        self.slot = slot if slot is not None else ModelSlot()
        self.clock = clock
        self.decoding = Decoding(settings.input, settings.window,
                                 settings.kafka.max_message_bytes)
        self.cold_start = ColdStart(settings, self.slot, self.metrics)
        self.tracker = OffsetTracker()
        self.stats = RunStats()
        self.stop_event = threading.Event()
        self.scored_hooks: list[ScoredHook] = []
        self.heartbeat = time.monotonic()  # last loop turn, for /healthz
        self.broker_ok = False  # partitions assigned, for /readyz
        self.broker_reachable = True  # the last probe or delivery was answered, for /readyz
        self.delivery = Delivery(producer, settings.kafka.dead_letter_topic, self.metrics,
                                 outage_budget_s=settings.kafka.outage_budget_s,
                                 on_wait=self._waiting_for_broker, clock=clock,
                                 transactional=settings.kafka.delivery == "exactly_once")
        self._finished: list[Any] = []  # input records done once this turn's sends are acked
        self._scored_ts: list[int] = []
        self._lag_at = 0.0
        self._window_counts: dict[str, int] = {}
        self._profiled_version: int | None = None  # the live version profiles came from
        self._unassigned_since: float | None = None
        self._poll_failing_since: float | None = None
        self.incidents = (IncidentFeed(settings.kafka, settings.incident,
                                       settings.threshold.top_k, self.metrics, self._send,
                                       clock) if settings.incident.enabled else None)
        self._unreadable: list[tuple[Any, Exception]] = []  # stand-ins of skipped offsets
        self.anomaly_log = AnomalyLog(each=settings.anomaly_log == "each")

    # -- the loop ---------------------------------------------------------------------
    def run(self, max_messages: int | None = None, timeout_s: float | None = None) -> RunStats:
        """Run until ``stop_event`` is set, ``max_messages`` consumed (and scored, when the
        cold start holds them for its training) or ``timeout_s`` passed."""
        live = self.slot.live
        if live is not None:
            self.decoding.fix_shape(live.scorer.input_shape)
            self.metrics.set_model(live.kind, live.version)
            self._adopt_profiles(live)
        topics = list(self.settings.kafka.input_topics)
        self.consumer.subscribe(topics, listener=_Rebalance(self))
        settle_heap()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while not self.stop_event.is_set():
                self.step()
                if (max_messages is not None and self.stats.consumed >= max_messages
                        and not self.cold_start.releasing()):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            self.shutdown()
        return self.stats

    def step(self) -> None:
        """One turn: poll a batch, handle every record of it, send, commit what is acked."""
        self.heartbeat = time.monotonic()
        records = self._poll()
        self._restore_incidents()
        intake = self.decoding.take(records)
        self._count_window_events()
        self._dead_letter(self._unreadable + intake.dead)
        self._unreadable = []
        self._finished.extend(intake.absorbed)
        ready = self.cold_start.admit(intake.batch, self.consumer, self.decoding)
        live = self.slot.live  # read once: a swap never splits a batch
        if live is not None and live.version != self._profiled_version:
            self._adopt_profiles(live)
            settle_heap()
        if len(ready) and live is not None:
            self._score(live, ready)
        self.anomaly_log.flush_if_due()
        self._deliver_and_commit(wait=False)
        self._observe_lag()

    def _adopt_profiles(self, live: LiveModel) -> None:
        """A version loaded from disk or the model topic brings the key profiles it was
        trained with: after a restart, known keys keep their units and score at once."""
        self._profiled_version = live.version
        self.decoding.follow_model(live.window_units, live.key_profiles)

    def shutdown(self) -> None:
        """Finish what is in flight, commit it, leave the group. Within a pod's grace
        period: what the broker has not acknowledged by then stays uncommitted (and is
        consumed again after the restart)."""
        self.cold_start.close()
        try:
            self._deliver_and_commit(budget_s=SHUTDOWN_BUDGET_S)
        except InfrastructureError as exc:
            log.warning("event=shutdown_without_commit error=%r", str(exc)[:300])
        finally:
            self.anomaly_log.flush_if_due(force=True)
            self._close_clients()
            log.info("event=daemon_stopped consumed=%d scored=%d anomalies=%d dead_letters=%d",
                     self.stats.consumed, self.stats.scored, self.stats.anomalies,
                     self.stats.dead_letters)

    def _close_clients(self) -> None:
        """Close both clients; a broker that is away makes a close time out, which must not
        hide why the loop stopped (what is unacknowledged stays uncommitted)."""
        for name, close in (("consumer", lambda: self.consumer.close(autocommit=False)),
                            ("producer", lambda: self.producer.close(timeout=10))):
            try:
                close()
            except KafkaError as exc:
                log.warning("event=client_close_incomplete client=%s error=%r", name, exc)

    # -- steps ----------------------------------------------------------------------
    def _poll(self) -> list[Any]:
        batch = self.settings.batch
        try:
            records = poll_available(self.consumer, batch.max_size, batch.max_wait_ms)
        except UnreadableRecords as exc:
            records = exc.records
            if exc.skipped:  # read past already, without their headers (confluent)
                self._unreadable_letters(exc.skipped, exc.cause)
            else:
                self._skip_unreadable(exc.cause)
        except KafkaError as exc:  # the client gave up on the broker: nothing was returned
            records = self._poll_failed(exc)
        else:
            self._poll_failing_since = None
        self.broker_ok = bool(self.consumer.assignment())
        self._rejoin_if_stuck()
        if records:
            self.tracker.started(records)
            self.stats.consumed += len(records)
            self.metrics.consumed.inc(len(records))
            self.metrics.batch_size.observe(len(records))
        return records

    def _poll_failed(self, exc: KafkaError) -> list[Any]:
        """A poll that raised returned nothing, so nothing is lost: poll again next turn,
        for as long as the outage budget allows."""
        now = time.monotonic()
        since = self._poll_failing_since = self._poll_failing_since or now
        self._set_reachable(False, repr(exc))
        if now - since >= self.settings.kafka.outage_budget_s:
            raise InfrastructureError(f"polls failing for {now - since:.0f}s (outage budget "
                                      f"{self.settings.kafka.outage_budget_s:.0f}s): "
                                      f"{exc!r}") from exc
        log.warning("event=poll_failed seconds=%.0f error=%r", now - since, exc)
        time.sleep(POLL_RETRY_S)
        return []

    def _skip_unreadable(self, cause: Exception) -> None:
        """Seek past what the client cannot parse; stand-ins for the skipped offsets go out
        as headers-only dead letters (see streamae.unreadable)."""
        found = locate(self.consumer, security_config(self.settings.kafka))
        if not found:
            raise InfrastructureError(f"poll failed and no unreadable record found: {cause!r}")
        for tp, offsets in found.items():
            log.warning("event=unreadable_records topic=%s partition=%d first=%d next=%d "
                        "error=%r", tp.topic, tp.partition, offsets.start, offsets.stop, cause)
            self.consumer.seek(tp, offsets.stop)
            self._unreadable_letters(
                [UnreadableRecord(tp.topic, tp.partition, n) for n in offsets], cause)

    def _unreadable_letters(self, batch: list[UnreadableRecord], cause: Exception) -> None:
        """Count the stand-ins as consumed; they go out as dead letters this turn."""
        error = UnreadableError(f"the client cannot parse this record: {cause}"[:500])
        self.tracker.started(batch)
        self.stats.consumed += len(batch)
        self._unreadable.extend((record, error) for record in batch)

    def _rejoin_if_stuck(self) -> None:
        """kafka-python 3.0 can join with metadata lacking a new topic and then stay
        unassigned; with nothing assigned there is nothing to lose by subscribing again."""
        if self.broker_ok:
            self._unassigned_since = None
            return
        now = time.monotonic()
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since > REJOIN_AFTER_S:
            log.warning("event=rejoining reason=no_partitions_assigned seconds=%.0f",
                        now - self._unassigned_since)
            self._unassigned_since = now
            try:
                self.consumer.unsubscribe()
            except KafkaError as exc:  # leaving the group needs the broker: it may be away
                self._set_reachable(False, repr(exc))
                log.warning("event=rejoin_leave_failed error=%r", exc)
            self.consumer.subscribe(list(self.settings.kafka.input_topics),
                                    listener=_Rebalance(self))

    def _restore_incidents(self) -> None:
        """After an assignment, before any of its records is counted: rebuild incidents."""
        if self.incidents is not None and self.incidents.reload_needed and self.broker_ok:
            self.incidents.restore(self.consumer.assignment())

    def _count_window_events(self) -> None:
        """Mirror the window builder's counters (evictions, late readings) into metrics."""
        windows = self.decoding.windows
        if windows is None:
            return
        seen = self._window_counts
        now = {"evicted": windows.evicted, "drop": windows.late_dropped,
               "accept": windows.late_accepted}
        self.metrics.windows_evicted.inc(now["evicted"] - seen.get("evicted", 0))
        for policy in ("drop", "accept"):
            self.metrics.late_readings.labels(policy=policy).inc(now[policy] - seen.get(policy, 0))
        self._window_counts = now

    def _dead_letter(self, dead: list[tuple[Any, Exception]]) -> None:
        for record, error in dead:
            self.delivery.dead_letter(record, error)
            self._finished.append(record)
        self.stats.dead_letters += len(dead)

    def _score(self, live: LiveModel, batch: Batch) -> None:
        values = batch.values
        started = time.perf_counter()
        scored = live.scorer.score(values)
        self.metrics.scoring_seconds.observe(time.perf_counter() - started)
        flags, value = classify_and_learn(live.threshold, scored.scores)
        features: dict[int, tuple[tuple[str, float], ...]] = {}
        for i in np.flatnonzero(flags).tolist():
            try:
                features[i] = self._publish_anomaly(live, batch.sample(i), values[i], scored,
                                                    i, value)
            except InfrastructureError:
                raise
            except Exception as exc:  # one record's explanation must not stop the batch
                self._dead_letter([(batch.records[i], exc)])
        if self.incidents is not None:
            self.incidents.observe(batch, scored.scores, flags, value, features)
        self._publish_scores(live, batch, scored.scores, flags, value)
        for hook in self.scored_hooks:
            hook(live, values, scored.scores, flags)
        self.metrics.scored.inc(len(batch))
        self.metrics.threshold.set(value if value is not None else float("nan"))
        self.stats.scored += len(batch)
        self._finished.extend(batch.records)
        self._scored_ts.extend(record.timestamp for record in batch.records)

    def _publish_anomaly(self, live: LiveModel, sample: Sample, values: np.ndarray,
                         batch: Any, i: int,
                         threshold: float | None) -> tuple[tuple[str, float], ...]:
        """Publish one anomaly event; its top features (name, z) for the incident."""
        explanation = explain(sample, values, batch.reconstruction(i), batch.feature_z[i],
                              self.settings.threshold.top_k, with_heatmap=True,
                              unseen=None if batch.unseen is None else batch.unseen[i])
        for part, named in (("spread", spread_changes), ("mode", mode_deviations)):
            if batch.scaled is not None and (found := named(
                    live.detector.error_stats, batch.scaled[i], sample.names, threshold)):
                explanation[part] = found  # what made the alarm, where errors do not say
        event = build_event(sample, score=float(batch.scores[i]), threshold=float(threshold),
                            method=self.settings.threshold.method,
                            kind=live.detector.model.description,
                            version=live.version, detected_ms=int(self.clock() * 1000),
                            explanation=explanation)
        self._send(self.settings.kafka.output_topic, encode_json(event), sample.record.key)
        self.metrics.anomalies.inc()
        self.stats.anomalies += 1
        top = explanation.get("features") or explanation.get("regions") or []
        self.anomaly_log.add(sample.key, sample.record.offset, float(batch.scores[i]),
                             float(threshold), top)
        return feature_names(explanation)

    def _publish_scores(self, live: LiveModel, batch: Batch, scores: np.ndarray,
                        flags: np.ndarray, threshold: float | None) -> None:
        topic = self.settings.kafka.scores_topic
        if not topic:
            return
        records = batch.records
        if self.settings.kafka.scores_format == "batch":
            for key, body in score_batches(records, batch.keys, scores, flags, threshold,
                                           live.version):
                self._send(topic, body, key)
            return
        for record, body in zip(records, score_records(records, batch.keys, scores, flags,
                                                       threshold, live.version), strict=True):
            self._send(topic, body, record.key)

    def _send(self, topic: str, value: bytes | None, key: bytes | None,
              headers: list[tuple[str, bytes]] | None = None) -> None:
        self.delivery.send(topic, value, key, headers)

    def _deliver_and_commit(self, wait: bool = True, budget_s: float | None = None) -> None:
        """Commit the offsets whose outputs are acknowledged.

        At least once, the loop does not wait: this turn's records are sealed with its
        sends and marked done when the producer's callbacks have acknowledged all of them
        (a later turn, usually the next); ``wait`` (a stop) waits for every ack first.
        Exactly once waits each turn: outputs and offsets are one transaction."""
        if self.delivery.transactional:
            self._commit_transaction(budget_s)
            return
        self.delivery.seal((self._finished, self._scored_ts))
        self._finished, self._scored_ts = [], []
        if wait:
            self.delivery.settle(budget_s)
            turns = self.delivery.collect(budget_s)
        else:
            turns = self.delivery.wait_below(MAX_TURNS_IN_FLIGHT)
        for turn in turns:
            records, scored_ts = turn.done
            self._observe_delivered(scored_ts)
            self.tracker.done(records)
            if turn.sent:
                self._set_reachable(True)
        commit(self.consumer, self.tracker, wait=wait)

    def _commit_transaction(self, budget_s: float | None) -> None:
        sent = self.delivery.pending
        self.delivery.settle(budget_s)
        if sent:
            self._set_reachable(True)
        self._observe_delivered(self._scored_ts)
        self._scored_ts = []
        self.tracker.done(self._finished)
        self._finished = []
        offsets = self.tracker.committable()
        self.delivery.commit(offsets, self.consumer.group_metadata())
        self.tracker.mark_committed(offsets)

    def _observe_delivered(self, scored_ts: list[int | None]) -> None:
        """End-to-end latency: from each scored record's timestamp to its outputs' acks."""
        if not scored_ts:
            return
        stamps = np.array([ts if ts is not None else 0 for ts in scored_ts], dtype=np.float64)
        stamps = stamps[stamps > 0]
        delays = np.maximum(0.0, (self.clock() * 1000 - stamps) / 1000)
        observe_many(self.metrics.end_to_end_seconds, delays)

    def _observe_lag(self) -> None:
        """Every few seconds: one broker round trip (is it reachable?) and the lag gauges."""
        if time.monotonic() - self._lag_at < LAG_EVERY_S:
            return
        self._lag_at = time.monotonic()
        assigned = list(self.consumer.assignment())
        if not assigned:
            return
        try:
            self.consumer.end_offsets(assigned, timeout_ms=PROBE_TIMEOUT_MS)
        except KafkaError as exc:
            self._set_reachable(False, repr(exc))
            return
        self._set_reachable(True)
        for tp, lag in consumer_lag(self.consumer).items():
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    def _set_reachable(self, reachable: bool, detail: str = "") -> None:
        if reachable and not self.broker_reachable:
            log.info("event=broker_reachable_again")
        elif not reachable and self.broker_reachable:
            log.warning("event=broker_unreachable detail=%r", detail[:200])
        self.broker_reachable = reachable

    def _waiting_for_broker(self, waited_s: float) -> None:
        """Called while records wait for acks: the loop is alive, the broker is not."""
        self.heartbeat = time.monotonic()
        self._set_reachable(False, f"records not acknowledged for {waited_s:.0f}s")

    # -- probes ---------------------------------------------------------------------
    def liveness(self, stale_after_s: float = 120.0) -> tuple[bool, str]:
        age = time.monotonic() - self.heartbeat
        return age < stale_after_s, f"last loop turn {age:.1f}s ago"

    def readiness(self) -> tuple[bool, str]:
        live = self.slot.live
        if live is None:
            return False, f"no model yet ({self.cold_start.status()})"
        if not self.broker_ok:
            return False, "no partitions assigned (broker unreachable or rebalancing)"
        if not self.broker_reachable:
            return False, "broker unreachable (records or probes not answered)"
        return True, f"model {live.kind} v{live.version}"


def settle_heap() -> None:
    """Keep the garbage collector off what lives as long as the process.

    Each poll allocates a few container objects per record, so CPython's collector runs
    every few hundred records, and its full passes walked every object the process holds
    (modules, settings, the model): 1.8 of the 3.4 CPU us per message that polling cost
    with confluent-kafka (``benchmarks/throughput.py --stages``). ``gc.freeze`` moves what
    is alive now out of its reach. Called when the loop starts and after a model swap,
    after one full collection, so that a replaced model's cycles are freed, not frozen.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class _Rebalance(ConsumerRebalanceListener):
    """Bookkeeping only: kafka-python 3 runs these callbacks on its IO thread, where a
    blocking call (flush, a synchronous commit) raises. A turn still waiting for acks when
    its partitions go is forgotten with them: the new owner consumes those records again
    (at least once, about REDELIVERED_TURNS batches); samples still gathered for a
    cold start stay and are scored (at least once)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def on_partitions_revoked(self, revoked: Any) -> None:
        daemon = self.daemon
        daemon.tracker.forget(revoked)
        if daemon.decoding.windows is not None:
            # Window context is rebuilt from the new owner's data: a key's readings may now
            # come back from the committed offset and would otherwise count as late.
            daemon.decoding.windows.clear()
        log.info("event=partitions_revoked count=%d", len(revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        if self.daemon.incidents is not None:
            self.daemon.incidents.reload_needed = True  # done by the loop, before scoring
        log.info("event=partitions_assigned count=%d", len(assigned))
