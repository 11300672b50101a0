"""Incidents: the flagged readings of one key that belong together, for a pager downstream.

A pager wants one page per episode, not one per reading. For each key the tracker keeps
the flags of its last ``open_readings`` (M) readings and

- **opens** an incident when ``open_flags`` (N) of them are flagged, or at once for one
  reading whose score is ``critical_margin`` or more above the threshold (a lone spike
  is an episode too; scores are -log10 tail probabilities, so a margin of 2 means a
  hundred times rarer than the threshold);
- **updates** it when its severity rises, when its peak's margin over the threshold grows
  ``update_factor`` (10) times over the margin last published and by at least
  ``update_margin`` (1: ten times rarer) (a peak 1 decade out updates at 10, one 30 out at
  300: scores of extreme readings grow linearly with their error, and a pager wants to hear
  of an order of magnitude, not of every step of a drift), or its
  set of top features changes (features ranked by their z summed over the incident's
  flagged readings; those under a quarter of the leader's are left out, so noise in the
  third place does not page); at most one ``updated`` per ``update_interval_ms`` of event
  time (30 s; Alertmanager's ``group_interval`` idea): a change inside the interval waits
  for the key's first reading after it and is published then if it still stands, or is
  folded into ``resolved``, which carries the final peak, severity and features;
- **resolves** it after ``quiet_readings`` (Q) readings of the key in a row with no flag
  (counted in readings, not seconds, so a replay and a live run agree and the quiet period
  scales with each key's own rate), or when the key has sent nothing for ``stale_ms`` of
  event time (the newest event time seen on any key), so a silent key cannot hold an
  incident open for ever.

Severity is ``critical`` when the peak score is ``critical_margin`` or more above the
threshold in force at the peak, else ``warning``: two values, safe as a metric label.

Restarts: after each batch ``snapshot`` gives the full state of every incident that
changed (counts, quiet run, feature weights, the input position of its last reading); the
pipeline publishes the snapshots with the batch's events, before its offsets are
committed. ``restore`` takes snapshots and events read back (the newest record of each
incident wins), reopens the incidents that are not resolved, and fences each key at the
input position of its newest record: the readings redelivered after a crash that were
already counted are skipped, so they cannot be counted twice nor reopen or re-resolve an
incident. Ids are derived from the key and the input position of the incident's first
flagged reading, so a replay that regenerates an event nobody acknowledged gives it the
same id.

Nothing here knows Kafka or settings: plain arguments in, plain dicts out; the pipeline
publishes them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

INCIDENT_SCHEMA = "streamae.incident/v1"
SEVERITIES = ("warning", "critical")  # the only label values of the incident metrics
OPENED, UPDATED, RESOLVED = "opened", "updated", "resolved"
STATE = "state"  # not an event: a snapshot for the state topic
TOP_SHARE = 0.25  # an incident's top features weigh at least this share of the leader's


class Position(NamedTuple):
    """Where a reading came from: the input topic, partition and offset. (Named tuples:
    one of each per reading, built ~4x faster than frozen dataclasses.)"""

    topic: str
    partition: int
    offset: int

    def covers(self, other: Position) -> bool:
        """True when ``other`` is this reading or an earlier one of the same partition."""
        return (other.topic, other.partition) == (self.topic, self.partition) and (
            other.offset <= self.offset)


class Observation(NamedTuple):
    """One scored reading of one key, as the tracker needs it."""

    key: str
    ts_ms: int  # event time
    score: float
    threshold: float
    flagged: bool
    position: Position
    features: tuple[tuple[str, float], ...] = ()  # (name, z) of a flagged reading's top-k


@dataclass
class Incident:
    id: str
    key: str
    started_ts_ms: int  # event time of its first flagged reading
    opened_ts_ms: int  # event time of the reading that opened it
    last_flagged_ts_ms: int
    last_ts_ms: int  # event time of the key's last reading
    peak_score: float
    peak_threshold: float
    peak_ts_ms: int
    position: Position  # the last reading that went into it
    flagged: int = 0  # flagged readings
    readings: int = 0  # all readings of the key since its first flagged one
    quiet: int = 0  # readings in a row with no flag
    weights: dict[str, float] = field(default_factory=dict)  # feature -> summed z
    counts: dict[str, int] = field(default_factory=dict)  # feature -> flagged readings
    sequence: int = 0  # events published so far
    published_peak: float = 0.0
    published_severity: str = SEVERITIES[0]
    published_top: frozenset[str] = frozenset()
    published_ts_ms: int = 0  # event time of the reading behind the last published event
    resolved_ts_ms: int | None = None
    resolution: str | None = None  # "quiet" or "stale" once resolved

    @property
    def peak_margin(self) -> float:
        """How far the peak score rose above its threshold: decades rarer, as scores are
        -log10 tail probabilities (2 = a hundred times rarer than the threshold)."""
        return self.peak_score - self.peak_threshold

    def absorb(self, obs: Observation) -> None:
        """Count one flagged reading: peak, features, quiet counter."""
        self.flagged += 1
        self.quiet = 0
        self.last_flagged_ts_ms = obs.ts_ms
        if obs.score > self.peak_score:
            self.peak_score, self.peak_threshold = obs.score, obs.threshold
            self.peak_ts_ms = obs.ts_ms
        for name, z in obs.features:
            self.weights[name] = self.weights.get(name, 0.0) + max(float(z), 0.0)
            self.counts[name] = self.counts.get(name, 0) + 1

    def top(self, k: int) -> list[str]:
        """Up to k features by summed z, leaving out those under ``TOP_SHARE`` of the
        leader's: features that only made an explanation's top-k by noise would otherwise
        swap places and publish an update each time."""
        ranked = sorted(self.weights, key=lambda name: (-self.weights[name], name))[:k]
        floor = TOP_SHARE * self.weights[ranked[0]] if ranked else 0.0
        return [name for name in ranked if self.weights[name] >= floor]


def incident_id(key: str, position: Position) -> str:
    """Stable id: the key and the input position of the incident's first flagged reading."""
    text = f"{key}\0{position.topic}\0{position.partition}\0{position.offset}"
    return "inc-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class IncidentTracker:
    """Per-key flag history and open incidents; ``observe`` returns the events to publish."""

    def __init__(self, *, open_flags: int = 2, open_readings: int = 3,
                 quiet_readings: int = 30, critical_margin: float = 2.0,
                 update_margin: float = 1.0, update_factor: float = 10.0,
                 update_interval_ms: int = 30_000, stale_ms: int = 900_000, top_k: int = 3,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        if not 1 <= open_flags <= open_readings:
            raise ValueError(f"need 1 <= open_flags ({open_flags}) <= open_readings "
                             f"({open_readings})")
        self.open_flags, self.open_readings = open_flags, open_readings
        self.quiet_readings, self.critical_margin = quiet_readings, critical_margin
        self.update_margin, self.update_factor = update_margin, update_factor
        self.update_interval_ms = update_interval_ms
        self.stale_ms, self.top_k = stale_ms, top_k
        self.max_keys, self.clock = max_keys, clock
        self.open: dict[str, Incident] = {}
        self._history: OrderedDict[str, deque[Observation | None]] = OrderedDict()
        self._fences: dict[str, Position] = {}
        self._dirty: dict[str, Incident] = {}  # changed since the last snapshot
        self.now_ms = 0  # newest event time seen

    # -- readings -------------------------------------------------------------------
    def observe(self, obs: Observation) -> list[dict]:
        """Account for one scored reading; the events it causes (zero or one)."""
        fence = self._fences.get(obs.key)
        if fence is not None:
            if fence.covers(obs.position):
                return []  # counted before a restart; redelivered since
            del self._fences[obs.key]
        self.now_ms = max(self.now_ms, obs.ts_ms)
        history = self._remember(obs.key, obs if obs.flagged else None)
        incident = self.open.get(obs.key)
        if incident is None:
            return self._maybe_open(obs, history)
        incident.readings += 1
        incident.last_ts_ms, incident.position = obs.ts_ms, obs.position
        self._dirty[incident.id] = incident
        if obs.flagged:
            incident.absorb(obs)
        else:
            incident.quiet += 1
            if incident.quiet >= self.quiet_readings:
                return [self._resolve(incident, obs.ts_ms, "quiet")]
        due = obs.ts_ms - incident.published_ts_ms >= self.update_interval_ms
        return [self._event(incident, UPDATED)] if due and self._changed(incident) else []

    def quiet(self, key: str, ts_ms: int) -> bool:
        """``observe`` for an unflagged reading, when its key has nothing open and no fence
        (nearly every reading): only the key's history moves, without building an
        ``Observation``. False when the reading needs ``observe``."""
        if key in self.open or key in self._fences:
            return False
        self.now_ms = max(self.now_ms, ts_ms)
        self._remember(key, None)
        return True

    def sweep(self) -> list[dict]:
        """Resolve incidents whose key has been silent for ``stale_ms`` of event time."""
        stale = [i for i in self.open.values() if self.now_ms - i.last_ts_ms >= self.stale_ms]
        return [self._resolve(incident, self.now_ms, "stale") for incident in stale]

    def severity(self, incident: Incident) -> str:
        return SEVERITIES[1] if incident.peak_margin >= self.critical_margin else SEVERITIES[0]

    def open_by_severity(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for incident in self.open.values():
            counts[self.severity(incident)] += 1
        return counts

    def _remember(self, key: str, flagged: Observation | None) -> deque[Observation | None]:
        """Append to the key's recent history (None: not flagged), most recently seen last."""
        history = self._history.get(key)
        if history is None:
            self._history[key] = history = deque(maxlen=self.open_readings)
            while len(self._history) > self.max_keys:
                self._history.popitem(last=False)
        else:
            self._history.move_to_end(key)
        history.append(flagged)
        return history

    def _maybe_open(self, obs: Observation, history: deque[Observation | None]) -> list[dict]:
        if not obs.flagged:
            return []
        flagged = [o for o in history if o is not None]
        critical = obs.score >= obs.threshold + self.critical_margin
        if len(flagged) < self.open_flags and not critical:
            return []
        first = flagged[0]
        since_first = len(history) - next(i for i, o in enumerate(history) if o is first)
        incident = Incident(
            id=incident_id(obs.key, first.position), key=obs.key,
            started_ts_ms=first.ts_ms, opened_ts_ms=obs.ts_ms, last_flagged_ts_ms=obs.ts_ms,
            last_ts_ms=obs.ts_ms, peak_score=first.score, peak_threshold=first.threshold,
            peak_ts_ms=first.ts_ms, position=obs.position, readings=since_first)
        for o in flagged:
            incident.absorb(o)
        self.open[obs.key] = incident
        self._dirty[incident.id] = incident
        history.clear()  # the next incident of this key starts from fresh flags
        return [self._event(incident, OPENED)]

    def _changed(self, incident: Incident) -> bool:
        rank = SEVERITIES.index
        published = max(incident.published_peak - incident.peak_threshold, 0.0)
        wanted = max(published + self.update_margin, self.update_factor * published)
        return (incident.peak_margin >= wanted
                or rank(self.severity(incident)) > rank(incident.published_severity)
                or frozenset(incident.top(self.top_k)) != incident.published_top)

    def _resolve(self, incident: Incident, ts_ms: int, reason: str) -> dict:
        del self.open[incident.key]
        incident.resolved_ts_ms, incident.resolution = ts_ms, reason
        self._dirty[incident.id] = incident
        return self._event(incident, RESOLVED)

    # -- events ---------------------------------------------------------------------
    def _event(self, incident: Incident, kind: str) -> dict:
        incident.sequence += 1
        incident.published_peak = incident.peak_score
        incident.published_severity = self.severity(incident)
        incident.published_top = frozenset(incident.top(self.top_k))
        incident.published_ts_ms = incident.last_ts_ms
        return self._describe(incident, kind)

    def _describe(self, incident: Incident, kind: str) -> dict:
        top = incident.top(self.top_k)
        pos = incident.position
        return {
            "schema": INCIDENT_SCHEMA, "event": kind, "id": incident.id, "key": incident.key,
            "sequence": incident.sequence,
            "status": "open" if incident.resolution is None else "resolved",
            "severity": self.severity(incident),
            "started_ts_ms": incident.started_ts_ms, "opened_ts_ms": incident.opened_ts_ms,
            "last_flagged_ts_ms": incident.last_flagged_ts_ms,
            "last_ts_ms": incident.last_ts_ms, "resolved_ts_ms": incident.resolved_ts_ms,
            "resolution": incident.resolution, "detected_ts_ms": int(self.clock() * 1000),
            "peak_score": incident.peak_score, "peak_threshold": incident.peak_threshold,
            "peak_margin": incident.peak_margin, "peak_ts_ms": incident.peak_ts_ms,
            "flagged_readings": incident.flagged, "readings": incident.readings,
            "top_features": [{"feature": name, "weight": incident.weights[name],
                              "readings": incident.counts.get(name, 0)} for name in top],
            "source": {"topic": pos.topic, "partition": pos.partition, "offset": pos.offset},
        }

    def snapshot(self) -> list[dict]:
        """The full state of every incident changed since the last snapshot (for the state
        topic, published with the batch, so a restart resumes exactly where the last
        committed batch left off)."""
        states = []
        for incident in self._dirty.values():
            state = self._describe(incident, STATE)
            state.update(quiet=incident.quiet, weights=dict(incident.weights),
                         counts=dict(incident.counts),
                         published={"peak": incident.published_peak,
                                    "severity": incident.published_severity,
                                    "top": sorted(incident.published_top),
                                    "ts_ms": incident.published_ts_ms})
            states.append(state)
        self._dirty.clear()
        return states

    # -- restarts -------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (before ``restore`` after a rebalance)."""
        self.open.clear()
        self._history.clear()
        self._fences.clear()
        self._dirty.clear()

    def restore(self, events: Iterable[dict],
                owned: Callable[[str, int], bool] = lambda topic, partition: True) -> int:
        """Rebuild open incidents from published events and state snapshots (any order,
        duplicates allowed; the newest record of each incident wins); only keys whose
        source partition ``owned`` says is ours. Returns how many are open."""
        latest: dict[str, dict] = {}
        for event in events:
            if event.get("schema") != INCIDENT_SCHEMA:
                continue
            seen = latest.get(event["id"])
            if seen is None or _newness(event) >= _newness(seen):
                latest[event["id"]] = event
        for event in sorted(latest.values(), key=lambda e: e["source"]["offset"]):
            source = event["source"]
            if not owned(source["topic"], int(source["partition"])):
                continue
            position = Position(source["topic"], int(source["partition"]), int(source["offset"]))
            self._fences[event["key"]] = position  # later offsets win (sorted)
            self.now_ms = max(self.now_ms, int(event["last_ts_ms"]))
            if event["status"] == "resolved":
                self.open.pop(event["key"], None)
            else:
                self.open[event["key"]] = incident_from_event(event, position)
        return len(self.open)


def _newness(event: dict) -> tuple[int, int]:
    """Events and snapshots of one incident in order: by sequence, then input offset."""
    return int(event["sequence"]), int(event["source"]["offset"])


def incident_from_event(event: dict, position: Position) -> Incident:
    """An open incident as its last record describes it: a snapshot restores it exactly;
    an event (when the snapshot after it was lost in a crash) restores its counts as of
    that event, and the quiet count starts again at 0."""
    top = event.get("top_features") or []
    weights = event.get("weights") or {str(t["feature"]): float(t["weight"]) for t in top}
    counts = event.get("counts") or {str(t["feature"]): int(t["readings"]) for t in top}
    published = event.get("published") or {"peak": event["peak_score"],
                                           "severity": event["severity"],
                                           "top": [t["feature"] for t in top],
                                           "ts_ms": event["last_ts_ms"]}
    return Incident(
        id=event["id"], key=event["key"], started_ts_ms=int(event["started_ts_ms"]),
        opened_ts_ms=int(event["opened_ts_ms"]),
        last_flagged_ts_ms=int(event["last_flagged_ts_ms"]),
        last_ts_ms=int(event["last_ts_ms"]), peak_score=float(event["peak_score"]),
        peak_threshold=float(event["peak_threshold"]), peak_ts_ms=int(event["peak_ts_ms"]),
        position=position, flagged=int(event["flagged_readings"]),
        readings=int(event["readings"]),
        quiet=int(event.get("quiet", 0)),
        weights={str(k): float(v) for k, v in weights.items()},
        counts={str(k): int(v) for k, v in counts.items()},
        sequence=int(event["sequence"]), published_peak=float(published["peak"]),
        published_severity=str(published["severity"]),
        published_top=frozenset(str(name) for name in published["top"]),
        published_ts_ms=int(published.get("ts_ms", event["last_ts_ms"])))


def feature_names(explanation: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    """(name, z) of an anomaly explanation's features, or of its image regions. A feature
    whose spread made the alarm (``spread``: grown or gone flat) or that left its mode's level
    (``mode``) comes first, weighed as the event's strongest error: the alarm is about it,
    though its own error is small."""
    if explanation.get("features"):
        named = tuple((str(f["feature"]), float(f["z"])) for f in explanation["features"])
    else:
        named = tuple((f"r{r['row']}c{r['col']}", float(r["z"]))
                      for r in explanation.get("regions") or ())
    spread = tuple(dict.fromkeys(str(s["feature"]) for part in ("spread", "mode")
                                 for s in explanation.get(part) or ()))
    if not spread:
        return named
    lead = max((z for _, z in named), default=1.0)
    return (*((name, lead) for name in spread),
            *((name, z) for name, z in named if name not in spread))
