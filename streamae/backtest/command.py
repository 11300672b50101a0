"""``streamae backtest``: read the recording, replay it, choose a rate, write the report."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from streamae.backtest import plots
from streamae.backtest.engine import RATES, Backtest, Figures, pick, run
from streamae.backtest.recording import Columns, Recording, read_recording
from streamae.backtest.report import write_report
from streamae.backtest.topic import TopicRange, read_topic_recording
from streamae.exceptions import DecodeError, StreamaeError
from streamae.messages import parse_ts
from streamae.settings import Settings

log = logging.getLogger(__name__)


def backtest(args: argparse.Namespace, settings: Settings) -> int:
    live, features = _checkpoint(args.checkpoint, settings)
    columns = Columns(label=args.label_column, key=args.key_column, time=args.time_column,
                      features=features or args.columns, exclude=tuple(args.exclude))
    recording = _recording(args, settings, columns)
    rates = sorted({*(args.rates or RATES), *_wanted_rates(args, settings)}, reverse=True)
    log.info("event=backtest_started input=%r rows=%d keys=%d", recording.source,
             len(recording), len(set(recording.keys)))
    result = _replay(recording, settings, args, live, rates)
    chosen = choose(result, settings, args.pick, args.max_alarms_per_day)
    pngs = write_report(args.out, result, settings, chosen, max_plots=args.max_plots)
    f = result.figures
    print(f"{len(recording)} rows, {len(result.keys)} keys: {f.alarms} alarms, "
          f"{f.incidents} incidents -> {args.out / 'report.md'}")
    if chosen is not None and chosen.rate is not None:
        print(f"chosen: STREAMAE_THRESHOLD__FALSE_ALARM_RATE={chosen.rate:g} "
              f"({chosen.alarms} alarms, {chosen.incidents} incidents)")
    if not pngs and not plots.available():
        print(f"no PNGs: matplotlib is not installed ({plots.INSTALL_HINT})")
    return 0


def _recording(args: argparse.Namespace, settings: Settings, columns: Columns) -> Recording:
    """From ``--input FILE`` or from a ``--topic`` range (exactly one of them)."""
    bounds = {name: getattr(args, name, None)
              for name in ("from_offset", "to_offset", "from_time", "to_time")}
    if (args.input is None) == (getattr(args, "topic", None) is None):
        raise StreamaeError("backtest: give exactly one of --input FILE or --topic NAME")
    if args.input is not None:
        if any(v is not None for v in bounds.values()):
            raise StreamaeError("backtest: --from-/--to- bounds go with --topic, not --input")
        return read_recording(args.input, columns, interval_ms=round(args.interval * 1000))
    wanted = TopicRange(args.topic, bounds["from_offset"], bounds["to_offset"],
                        _epoch_ms(bounds["from_time"]), _epoch_ms(bounds["to_time"]))
    return read_topic_recording(settings.kafka, wanted, columns)


def _epoch_ms(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_ts(text.strip())
    except DecodeError as exc:
        raise StreamaeError(f"backtest: {text!r} is not a time (epoch ms or ISO-8601): "
                            f"{exc}") from exc


def _replay(recording: object, settings: Settings, args: argparse.Namespace,
            live: object, rates: list[float]) -> Backtest:
    from tqdm import tqdm

    with tqdm(total=len(recording), desc="replaying", unit="reading", disable=None) as bar:
        return run(recording, settings, warmup_rows=args.warmup, live=live, rates=rates,
                   progress=bar.update)


def _wanted_rates(args: argparse.Namespace, settings: Settings) -> list[float]:
    wanted = [] if args.pick is None else [args.pick]
    if settings.threshold.method == "false_alarm_rate":
        wanted.append(settings.threshold.false_alarm_rate)
    return wanted


def choose(result: Backtest, settings: Settings, rate: float | None,
           max_alarms_per_day: float | None) -> Figures | None:
    """``rate`` when given; else the most sensitive rate within ``max_alarms_per_day``;
    else the configured rate (or the configured method's own figures)."""
    if max_alarms_per_day is not None and rate is None:
        return pick(result.sweep, max_alarms_per_day)
    if rate is None and settings.threshold.method == "false_alarm_rate":
        rate = settings.threshold.false_alarm_rate
    if rate is None:
        return result.figures
    return next(f for f in result.sweep if math.isclose(f.rate, rate))


def _checkpoint(directory: Path | None, settings: Settings) -> tuple[object, list | None]:
    """The newest checkpoint of ``directory`` as the live model, and its feature names."""
    if directory is None:
        return None, None
    from streamae.checkpoints import load_latest
    from streamae.live import live_from_checkpoint

    checkpoint = load_latest(directory)
    if checkpoint is None:
        raise StreamaeError(f"no checkpoint in {directory}")
    live = live_from_checkpoint(checkpoint, settings.device, settings.batch.max_size)
    return live, checkpoint.metadata.get("features")
