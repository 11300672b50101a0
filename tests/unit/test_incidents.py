"""The incident tracker: opening (N of M, or one critical reading), updates, resolution,
silent keys, and restarts rebuilt from the published events."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from streamae.incidents import (
    INCIDENT_SCHEMA,
    IncidentTracker,
    Observation,
    Position,
    feature_names,
    incident_id,
)
from streamae.messages import encode_json

THRESHOLD = 5.0
PERIOD_MS = 100


def tracker(**overrides) -> IncidentTracker:
    args = {"open_flags": 2, "open_readings": 3, "quiet_readings": 4, "critical_margin": 3.0,
            "update_margin": 1.5, "update_interval_ms": 0, "stale_ms": 10_000, "top_k": 2,
            "clock": lambda: 1234.5}
    return IncidentTracker(**{**args, **overrides})


def obs(offset: int, score: float, key: str = "pump-1", features=(("a", 6.0),),
        partition: int = 0) -> Observation:
    return Observation(key, 1_000_000 + offset * PERIOD_MS, score, THRESHOLD,
                       score > THRESHOLD, Position("in", partition, offset),
                       features if score > THRESHOLD else ())


def feed(t: IncidentTracker, scores, start: int = 0, fast: bool = True,
         **kwargs) -> list[dict]:
    """As IncidentFeed does: ``quiet`` first for unflagged readings (unless not ``fast``)."""
    events = []
    for n, score in enumerate(scores):
        o = obs(start + n, score, **kwargs)
        if fast and not o.flagged and t.quiet(o.key, o.ts_ms):
            continue
        events.extend(t.observe(o))
    return events


def test_the_quiet_fast_path_changes_nothing_but_the_cost():
    rng = np.random.default_rng(4)
    scores = np.where(rng.random(3000) < 0.08, rng.uniform(5.5, 12, 3000), 1.0)
    keys = [f"k{i}" for i in rng.integers(0, 5, 3000)]
    runs = []
    for fast in (False, True):
        t = tracker(max_keys=4, update_interval_ms=3 * PERIOD_MS)
        events = []
        for n, (score, key) in enumerate(zip(scores.tolist(), keys, strict=True)):
            events += feed(t, [score], start=n, fast=fast, key=key)
            events += t.snapshot() if n % 50 == 49 else []
        runs.append((roundtrip(events), t.now_ms, {k: list(h) for k, h in t._history.items()}))
    assert runs[0] == runs[1]
    assert sum(e["event"] == "opened" for e in runs[1][0]) > 20


def test_two_flags_among_three_readings_open_an_incident_from_the_first_flag():
    t = tracker()
    assert feed(t, [1, 6, 1]) == []  # one flag of three: nothing yet
    opened, = feed(t, [7], start=3)
    assert opened["schema"] == INCIDENT_SCHEMA and opened["event"] == "opened"
    assert opened["id"] == incident_id("pump-1", Position("in", 0, 1))
    assert opened["started_ts_ms"] == 1_000_000 + 1 * PERIOD_MS
    assert opened["opened_ts_ms"] == 1_000_000 + 3 * PERIOD_MS
    assert (opened["flagged_readings"], opened["readings"]) == (2, 3)
    assert (opened["peak_score"], opened["peak_ts_ms"]) == (7, 1_000_000 + 3 * PERIOD_MS)
    assert opened["severity"] == "warning" and opened["status"] == "open"
    assert opened["detected_ts_ms"] == 1_234_500  # the injected clock
    assert opened["source"] == {"topic": "in", "partition": 0, "offset": 3}
    assert t.open_by_severity() == {"warning": 1, "critical": 0}


def test_flags_further_apart_than_m_readings_never_open_one():
    assert feed(tracker(), [6, 1, 1, 6, 1, 1, 6, 1, 1, 6]) == []


def test_one_critical_reading_opens_at_once_as_critical():
    opened, = feed(tracker(), [1, THRESHOLD + 3.0])  # critical_margin above the threshold
    assert opened["event"] == "opened" and opened["severity"] == "critical"
    assert opened["flagged_readings"] == 1 and opened["readings"] == 1


def test_resolved_after_q_quiet_readings_in_a_row_and_a_flag_restarts_the_count():
    t = tracker()
    events = feed(t, [6, 6, 1, 1, 1, 6, 1, 1, 1])  # quiet 3, flag, quiet 3: still open
    assert [e["event"] for e in events] == ["opened"]
    resolved, = feed(t, [1], start=9)
    assert resolved["event"] == "resolved" and resolved["status"] == "resolved"
    assert resolved["resolution"] == "quiet"
    assert resolved["resolved_ts_ms"] == 1_000_000 + 9 * PERIOD_MS
    assert resolved["last_flagged_ts_ms"] == 1_000_000 + 5 * PERIOD_MS
    assert (resolved["flagged_readings"], resolved["readings"]) == (3, 10)
    assert resolved["sequence"] == 2 and resolved["id"] == events[0]["id"]
    assert t.open_by_severity() == {"warning": 0, "critical": 0}
    # The next episode of the key is a new incident.
    reopened, = feed(t, [6, 6], start=10)
    assert reopened["event"] == "opened" and reopened["id"] != events[0]["id"]


def test_updated_when_the_peak_rises_enough_or_severity_rises_not_for_small_rises():
    t = tracker(update_factor=1.0)  # the additive part of the rule alone
    feed(t, [6, 6])
    assert feed(t, [7.4], start=2) == []  # below 6 + 1.5
    updated, = feed(t, [7.5], start=3)
    assert updated["event"] == "updated" and updated["peak_score"] == 7.5
    assert updated["sequence"] == 2
    assert feed(t, [7.9], start=4) == []  # 7.9 < 7.5 + 1.5 and < 5 + 3
    critical, = feed(t, [8.0], start=5)  # 8 >= 5 + 3: severity rises
    assert critical["severity"] == "critical"
    assert t.open_by_severity() == {"warning": 0, "critical": 1}


def test_updated_when_the_set_of_top_features_changes():
    t = tracker()
    feed(t, [6, 6], features=(("a", 6.0), ("b", 3.0)))
    assert feed(t, [6], start=2, features=(("b", 3.0), ("a", 2.0))) == []  # same set
    updated, = feed(t, [6, 6], start=3, features=(("c", 20.0),))
    assert [f["feature"] for f in updated["top_features"]] == ["c", "a"]
    assert updated["top_features"][0] == {"feature": "c", "weight": 20.0, "readings": 1}


def test_features_far_behind_the_leader_are_not_top_features_and_do_not_update():
    t = tracker(top_k=3)
    opened, = feed(t, [6, 6], features=(("a", 10.0), ("b", 6.0), ("c", 0.5)))
    assert [f["feature"] for f in opened["top_features"]] == ["a", "b"]  # c: 1 < 25% of 20
    assert feed(t, [6], start=2, features=(("a", 10.0), ("b", 6.0), ("d", 0.9))) == []


def test_keys_are_independent():
    t = tracker()
    events = []
    for n in range(6):  # interleaved: pump-1 flags, pump-2 does not
        events += t.observe(obs(2 * n, 6, key="pump-1"))
        events += t.observe(obs(2 * n + 1, 6 if n == 0 else 1, key="pump-2"))
    assert [(e["event"], e["key"]) for e in events] == [("opened", "pump-1")]


def test_a_silent_key_is_resolved_as_stale_by_event_time_of_other_keys():
    t = tracker(quiet_readings=1000)
    feed(t, [6, 6], key="pump-1")
    for n in range(2, 200):
        t.observe(obs(n, 1, key="pump-2"))
        events = t.sweep()
        if events:
            break
    resolved, = events
    assert resolved["key"] == "pump-1" and resolved["resolution"] == "stale"
    assert resolved["resolved_ts_ms"] - resolved["last_ts_ms"] == 10_000
    assert t.sweep() == []


def test_invalid_n_of_m_is_refused():
    with pytest.raises(ValueError, match="open_flags"):
        tracker(open_flags=4, open_readings=3)


def roundtrip(events: list[dict]) -> list[dict]:
    """Through the wire format, as restore reads them back from Kafka."""
    return [json.loads(encode_json(e)) for e in events]


EPISODES = [1] * 10 + [6, 7, 9, 12, 8, 6, 1, 6, 7] + [1] * 12 + [6, 8, 6] + [1] * 10


@pytest.mark.parametrize("crash_after,committed", [(12, 5), (14, 12), (20, 19), (33, 30),
                                                   (36, 36), (len(EPISODES), 40)])
def test_restart_from_the_events_neither_forgets_nor_duplicates(crash_after, committed):
    uninterrupted = feed(tracker(), EPISODES)
    before = feed(tracker(), EPISODES[:crash_after])  # published and acknowledged
    restarted = tracker()
    restarted.restore(roundtrip(before))
    # Redelivery starts at the last committed offset, before the crash point.
    after = feed(restarted, EPISODES[committed:], start=committed)
    events = before + after
    assert Counter((e["id"], e["sequence"]) for e in events).most_common(1)[0][1] == 1
    kinds = Counter((e["id"], e["event"]) for e in events)
    ids = {e["id"] for e in events}
    assert all(kinds[(i, "opened")] == 1 and kinds[(i, "resolved")] == 1 for i in ids)
    assert ids == {e["id"] for e in uninterrupted} and len(ids) == 2


def run_in_batches(t: IncidentTracker, scores, start: int, size: int) -> list[dict]:
    """As the daemon does: a batch's events, then the snapshots of what it changed."""
    published = []
    for first in range(start, len(scores), size):
        published += feed(t, scores[first:first + size], start=first)
        published += t.snapshot()
    return published


@pytest.mark.parametrize("acked_batches", range(2, 9))
@pytest.mark.parametrize("commit_lost", [False, True])
@pytest.mark.parametrize("interval_ms", [0, 4 * PERIOD_MS])
def test_restart_from_snapshots_continues_exactly_as_if_uninterrupted(acked_batches,
                                                                      commit_lost,
                                                                      interval_ms):
    size = 5
    uninterrupted = [e for e in run_in_batches(tracker(update_interval_ms=interval_ms),
                                               EPISODES, 0, size) if e["event"] != "state"]
    before = run_in_batches(tracker(update_interval_ms=interval_ms),
                            EPISODES[:acked_batches * size], 0, size)
    restarted = tracker(update_interval_ms=interval_ms)
    restarted.restore(roundtrip(before))
    committed = (acked_batches - commit_lost) * size  # a lost commit redelivers a batch
    after = run_in_batches(restarted, EPISODES, committed, size)
    events = [e for e in before + after if e["event"] != "state"]
    assert roundtrip(events) == roundtrip(uninterrupted)


def test_restore_keeps_only_owned_partitions_and_the_latest_event_of_each_incident():
    t = tracker()
    events = feed(t, [6, 6, 12], key="pump-1", partition=0)
    events += feed(t, [6, 6], key="pump-2", partition=1)
    assert [e["event"] for e in events] == ["opened", "updated", "opened"]
    fresh = tracker()
    assert fresh.restore(roundtrip(events)[::-1], owned=lambda topic, p: p == 0) == 1
    incident = fresh.open["pump-1"]
    assert incident.peak_score == 12 and incident.sequence == 2
    assert set(fresh.open) == {"pump-1"}
    # It goes on from the restored state: the next event has the next sequence number.
    resolved = feed(fresh, [1, 1, 1, 1], start=3, key="pump-1")
    assert [(e["event"], e["sequence"]) for e in resolved] == [("resolved", 3)]


def test_a_feature_whose_spread_fired_leads_the_incident_though_its_error_is_small():
    explanation = {"features": [{"feature": "flow", "z": 6.0}, {"feature": "pump", "z": 0.4}],
                   "spread": [{"feature": "pump", "change": "grown", "spread_ratio": 3.2}]}
    assert feature_names(explanation) == (("pump", 6.0), ("flow", 6.0))
    assert feature_names({"features": [{"feature": "a", "z": 2.0}], "spread": []}) == (
        ("a", 2.0),)


def test_feature_names_of_vectors_and_image_regions():
    assert feature_names({"features": [{"feature": "flow", "z": np.float32(4.5)},
                                       {"feature": 3, "z": 2.0}]}) == (("flow", 4.5), ("3", 2.0))
    regions = {"regions": [{"row": 4, "col": 8, "z": 3.0}]}
    assert feature_names(regions) == (("r4c8", 3.0),)


def test_an_extreme_peak_updates_when_its_margin_grows_tenfold_not_at_every_decade():
    t = tracker(critical_margin=1000.0)  # keep severity out of it
    feed(t, [30, 30])  # published peak 30: 25 decades above the threshold of 5
    assert feed(t, [31, 60, 254.9], start=2) == []
    updated, = feed(t, [255], start=5)  # a margin of 250: ten times 25
    assert updated["event"] == "updated" and updated["peak_score"] == 255


def test_updates_wait_for_the_interval_and_publish_the_change_that_still_stands():
    t = tracker(update_interval_ms=10 * PERIOD_MS, quiet_readings=20)
    opened, = feed(t, [6, 6])  # published at reading 1
    # Severity rises and the peak climbs inside the interval: nothing yet.
    assert feed(t, [9, 12, 1, 1, 1, 1, 1], start=2) == []
    assert feed(t, [6, 1], start=9) == []  # reading 10 is still inside (1 + 10 > 10)
    updated, = feed(t, [1], start=11)  # the first reading past the interval, unflagged
    assert (updated["event"], updated["severity"], updated["peak_score"]) == (
        "updated", "critical", 12)
    assert updated["sequence"] == opened["sequence"] + 1
    assert feed(t, [6, 1], start=12) == []  # no change since: nothing to publish


def test_a_change_inside_the_interval_is_folded_into_resolved():
    t = tracker(update_interval_ms=60 * PERIOD_MS)
    feed(t, [6, 6])
    events = feed(t, [12, 1, 1, 1, 1], start=2)  # quiet_readings 4: resolved
    assert [e["event"] for e in events] == ["resolved"]
    assert (events[0]["severity"], events[0]["peak_score"]) == ("critical", 12)


def test_a_restart_inside_the_interval_keeps_waiting():
    published = feed(tracker(update_interval_ms=10 * PERIOD_MS), [6, 6])
    restarted = tracker(update_interval_ms=10 * PERIOD_MS)
    restarted.restore(roundtrip(published))  # from the opened event alone
    assert feed(restarted, [12], start=2) == []
    updated, = feed(restarted, [1], start=11)
    assert updated["peak_score"] == 12
