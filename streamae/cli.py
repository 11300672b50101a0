"""``streamae run | demo | retrain | train | score | encode | sample | backtest``: the
command line, and the only place that configures logging. Everything else is read from the
environment (``STREAMAE_*``)."""


from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamae.demo import CLEAN_PREFIX, SCENARIOS
from streamae.exceptions import StreamaeError
from streamae.settings import Settings, load_settings

if TYPE_CHECKING:
    from streamae.checkpoints import Checkpoint

log = logging.getLogger("streamae.cli")
DESCRIPTION = ("Streaming anomaly detection on Kafka with autoencoders. Options are on the "
               "command line; everything else is read from STREAMAE_* environment variables "
               "(see README.md).")


class KeyValueFormatter(logging.Formatter):
    """One line per event: ``ts=... level=... logger=... event=... k=v``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
                f"logger={record.name} {record.getMessage()}")
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class ExpectedKafkaConditions(logging.Filter):
    """Expected conditions that kafka-python logs as failures, shown at DEBUG only:

    * an input topic that does not exist yet (an ERROR), though a daemon started before
      its producers expects it (the quickstart does) and reports it once at INFO itself
      (``event=input_topics_missing``);
    * its IO loop's slow-step warning ("Task ... ran for 0.136s (>0.100s threshold). It is
      blocking the event loop"), asyncio's slow-callback diagnostic: on a busy shared CPU a
      step is descheduled for longer than that, and nothing is wrong with the client;
    * a receive error on a socket the client has already closed (its transport shows
      "(closed)"): when a client closes, its IO thread can wake on a socket that the
      closing thread has just released and logs the ``AttributeError`` as an ERROR with
      a traceback (kafka-python 3.0.12). A receive error on an open socket stays an error.
    """

    MESSAGES = ("Topic %s not found in cluster metadata",)
    SLOW_STEP = "blocking the event loop"
    CLOSED_RECEIVE = "%s: Error receiving network data closing socket"
    LOGGERS = ("kafka.cluster", "kafka.net.selector", "kafka.net.transport")

    def __init__(self, level: int) -> None:
        super().__init__()
        self.show = level <= logging.DEBUG

    def filter(self, record: logging.LogRecord) -> bool:
        if self._expected(str(record.msg), record.args):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info = record.exc_text = None
            return self.show
        return True

    def _expected(self, message: str, args: object) -> bool:
        if message in self.MESSAGES:
            return True
        if message.startswith("Task ") and self.SLOW_STEP in message:
            return True
        return (message == self.CLOSED_RECEIVE and isinstance(args, tuple) and len(args) == 1
                and str(args[0]).endswith("(closed)>"))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    for name in ExpectedKafkaConditions.LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ExpectedKafkaConditions)]:
            logger.removeFilter(old)
        logger.addFilter(ExpectedKafkaConditions(logging.getLevelName(level)))


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streamae.service import serve

    serve(settings, max_messages=args.max_messages, timeout_s=args.timeout)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streamae.demo import DemoStream, scenario
    from streamae.kafka_io import build_producer, ensure_topics
    from streamae.messages import encode_json

    topic = args.topic or settings.kafka.input_topics[0]
    ensure_topics(settings.kafka, [topic])  # not auto-created on the first send
    producer = build_producer(settings.kafka)
    stream = DemoStream(pumps=args.pumps, anomaly_rate=args.anomaly_rate, seed=args.seed,
                        start_ms=int(time.time() * 1000), clean_prefix=args.clean_prefix,
                        scenario=scenario(args.scenario, args.count))
    started, labels = time.monotonic(), 0
    for n, reading in enumerate(stream.take(args.count)):
        producer.send(topic, key=reading.key.encode(), value=encode_json(reading.as_message()))
        labels += reading.label != "normal"
        if args.rate > 0:
            time.sleep(max(0.0, started + (n + 1) / args.rate - time.monotonic()))
    producer.flush()
    producer.close()
    log.info("event=demo_produced topic=%s messages=%d anomalous=%d seconds=%.1f", topic,
             args.count, labels, time.monotonic() - started)
    return 0


def cmd_retrain(args: argparse.Namespace, settings: Settings) -> int:
    """Ask the running daemon (its health server) to retrain on recent data now."""
    import urllib.error
    import urllib.request

    url = args.url or f"http://127.0.0.1:{settings.metrics_port}/retrain"
    request = urllib.request.Request(url, data=b"accept-recent", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.read().decode().strip())
            return 0
    except urllib.error.HTTPError as exc:
        print(f"streamae retrain: refused ({exc.code}): {exc.read().decode().strip()}",
              file=sys.stderr)
    except OSError as exc:
        print(f"streamae retrain: cannot reach the daemon at {url}: {exc}", file=sys.stderr)
    return 1


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from streamae.checkpoints import save_checkpoint
    from streamae.live import calibrated_threshold, train_detector
    from streamae.tables import read_table

    table = read_table(args.input, columns=args.columns, exclude=tuple(args.exclude))
    directory = args.out or settings.checkpoints.directory
    with tqdm(total=settings.model.epochs, desc="training", unit="epoch") as bar:
        def progress(epoch: int, val_loss: float) -> None:
            bar.update(1)
            bar.set_postfix(val_loss=f"{val_loss:.4f}")

        detector = train_detector(table.values, settings.model, settings.device, progress,
                                  normalisation=settings.threshold.normalisation)
        if detector.epochs_run < settings.model.epochs:  # early stop: the bar ends full
            bar.total = detector.epochs_run
            bar.set_postfix(val_loss=f"{detector.val_loss:.4f}", stopped="plateau")
    threshold = calibrated_threshold(settings.threshold, detector)
    version = save_checkpoint(directory, detector, threshold_state=threshold.state(),
                              metadata={"origin": "train", "source": str(args.input),
                                        "features": list(table.columns)},
                              keep=settings.checkpoints.keep)
    print(f"checkpoint version {version} in {directory} ({len(table.values)} rows, "
          f"{len(table.columns)} features, threshold {threshold.value:.3f})")
    return 0


def cmd_score(args: argparse.Namespace, settings: Settings) -> int:
    from streamae.live import live_from_checkpoint
    from streamae.tables import read_table, write_table

    checkpoint = _checkpoint(args, settings)
    columns = checkpoint.metadata.get("features") or args.columns
    table = read_table(args.input, columns=columns, exclude=tuple(args.exclude))
    live = live_from_checkpoint(checkpoint, settings.device, settings.batch.max_size)
    batch = live.scorer.score(table.values)
    flags = live.threshold.classify(batch.scores)
    rows = [[i, round(float(s), 6), live.threshold.value, int(f)]
            for i, (s, f) in enumerate(zip(batch.scores, flags, strict=True))]
    write_table(args.out, ["row", "score", "threshold", "anomaly"], rows)
    print(f"{len(rows)} rows scored, {int(np.sum(flags))} anomalies -> {args.out}")
    return 0


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    """Recorded data through the daemon's path; a report folder (streamae.backtest)."""
    from streamae.backtest.command import backtest

    return backtest(args, settings)


def _checkpoint(args: argparse.Namespace, settings: Settings) -> Checkpoint:
    from streamae.checkpoints import load_latest

    checkpoint = load_latest(args.checkpoints or settings.checkpoints.directory)
    if checkpoint is None:
        raise StreamaeError("no checkpoint found; run `streamae train` or the daemon first")
    return checkpoint


def cmd_encode(args: argparse.Namespace, settings: Settings) -> int:
    """Latent vectors of a file's rows (compression, reduction, feature extraction)."""
    from streamae.latents import latent_records, load_inputs, publish, write_array
    from streamae.live import KEY_PROFILES
    from streamae.scoring import Scorer

    topic = args.topic or (settings.kafka.latent_topic if args.to_topic else None)
    if args.out is None and topic is None:
        raise StreamaeError("encode needs --out FILE and/or --to-topic (kafka.latent_topic)")
    checkpoint = _checkpoint(args, settings)
    detector = checkpoint.detector
    columns = checkpoint.metadata.get("features") or args.columns
    data = load_inputs(args.input, detector.model.input_shape, columns=columns,
                       exclude=tuple(args.exclude), stride=args.stride,
                       profile_readings=settings.window.profile_readings
                       if KEY_PROFILES in checkpoint.metadata else 0)
    latents = Scorer(detector, settings.device).encode(data)
    if args.out is not None:
        write_array(args.out, latents, prefix="z")
    if topic is not None:
        publish(settings.kafka, topic, latent_records(
            latents, source=str(args.input), kind=detector.model.kind,
            version=checkpoint.version))
    log.info("event=encoded items=%d input_shape=%s latent_size=%d out=%s topic=%s",
             len(latents), detector.model.input_shape, latents.shape[1], args.out, topic)
    print(f"{len(latents)} items -> latent vectors of {latents.shape[1]} "
          f"({args.out or ''}{' ' if args.out and topic else ''}{topic or ''})")
    return 0


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    """New data drawn from a trained variational model's prior, in original units."""
    from streamae.latents import write_array
    from streamae.scoring import sample

    checkpoint = _checkpoint(args, settings)
    drawn = sample(checkpoint.detector, args.n, device=settings.device, seed=args.seed)
    write_array(args.out, drawn, names=checkpoint.metadata.get("features"))
    log.info("event=sampled items=%d shape=%s version=%d out=%s", len(drawn),
             drawn.shape[1:], checkpoint.version, args.out)
    print(f"{len(drawn)} samples shaped {drawn.shape[1:]} -> {args.out}")
    return 0


class _DeprecatedAlias(argparse.Action):
    """``--csv``: the old name of ``--input``; still accepted, with a note on stderr."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"streamae: {option_string} is deprecated, use --input", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_input(cmd: argparse.ArgumentParser, what: str, old_alias: bool = True) -> None:
    """``--input FILE``: one name for the input file of every command (``--csv``, the old
    name, on the commands that had it)."""
    cmd.add_argument("--input", type=Path, default=None, metavar="FILE", help=what)
    if old_alias:
        cmd.add_argument("--csv", type=Path, dest="input", action=_DeprecatedAlias,
                         help=argparse.SUPPRESS)
    cmd.set_defaults(input_required=True)


def _add_columns(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--columns", nargs="*", default=None, metavar="NAME",
                     help="CSV columns to use, in order (default: every numeric column; a "
                          "checkpoint's own feature list wins)")
    cmd.add_argument("--exclude", nargs="*", default=[], metavar="NAME",
                     help="CSV columns to leave out (time stamps, labels)")


def _add_file_commands(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="CSV of normal rows -> checkpoint")
    _add_input(train, "CSV of normal rows, one feature per column")
    _add_columns(train)
    train.add_argument("--out", type=Path, default=None, metavar="DIR",
                       help="checkpoint directory (default: STREAMAE_CHECKPOINTS__DIRECTORY)")
    score = sub.add_parser("score", help="CSV -> CSV of scores and flags")
    _add_input(score, "CSV of rows to score (same columns as training)")
    _add_columns(score)
    score.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                       help="checkpoint directory (default: STREAMAE_CHECKPOINTS__DIRECTORY)")
    score.add_argument("--out", type=Path, required=True, metavar="FILE",
                       help="CSV written: row, score, threshold, anomaly")


def _add_latent_commands(sub: argparse._SubParsersAction) -> None:
    encode = sub.add_parser("encode", help="inputs -> latent vectors (file and/or topic)")
    _add_input(encode, "CSV of rows (windows are built for window models) or .npy shaped "
                       "(N, *input_shape)")
    _add_columns(encode)
    encode.add_argument("--stride", type=int, default=1, help="CSV rows between windows")
    encode.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                        help="checkpoint directory (default: STREAMAE_CHECKPOINTS__DIRECTORY)")
    encode.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="latent vectors written as .npy or .csv")
    encode.add_argument("--to-topic", action="store_true",
                        help="publish to STREAMAE_KAFKA__LATENT_TOPIC")
    encode.add_argument("--topic", default=None, help="publish to this topic instead")
    sample = sub.add_parser("sample", help="draw new data from a trained VAE")
    sample.add_argument("--n", type=int, default=100, help="how many samples to draw")
    sample.add_argument("--seed", type=int, default=0, help="random seed of the draws")
    sample.add_argument("--checkpoints", type=Path, default=None, metavar="DIR",
                        help="checkpoint directory (default: STREAMAE_CHECKPOINTS__DIRECTORY)")
    sample.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="samples written as .npy or .csv")


def _add_backtest_command(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("backtest", help="recorded data through the daemon's code -> "
                                          "report: plots, alarms, incidents, a rate sweep")
    _add_input(cmd, "recording: CSV, JSON lines (.jsonl) or .npy, rows in time order (or "
                    "--topic)", old_alias=False)
    cmd.set_defaults(input_required=False)  # --input or --topic: checked by the command
    cmd.add_argument("--topic", default=None, metavar="NAME",
                     help="read the recording from this topic (JSON input messages, every "
                          "partition, no consumer group) instead of --input")
    cmd.add_argument("--from-offset", type=int, default=None, metavar="N",
                     help="--topic: first offset (every partition; default: the beginning)")
    cmd.add_argument("--to-offset", type=int, default=None, metavar="N",
                     help="--topic: last offset, inclusive (default: the end now)")
    cmd.add_argument("--from-time", default=None, metavar="TIME",
                     help="--topic: first broker timestamp, epoch ms or ISO-8601")
    cmd.add_argument("--to-time", default=None, metavar="TIME",
                     help="--topic: last broker timestamp, inclusive, epoch ms or ISO-8601")
    _add_columns(cmd)
    cmd.add_argument("--label-column", default=None, metavar="NAME",
                     help="column (--topic: message field) that marks anomalous rows "
                          "(1/true); enables precision, recall and event F1 (.npy: a column "
                          "number)")
    cmd.add_argument("--key-column", default=None, metavar="NAME",
                     help="column of the entity key (default: `key` when present; .npy: a "
                          "column number)")
    cmd.add_argument("--time-column", default=None, metavar="NAME",
                     help="epoch ms or ISO-8601 (default: ts, timestamp, time, datetime or "
                          "date when present)")
    cmd.add_argument("--interval", type=float, default=1.0, metavar="S",
                     help="seconds between rows when there is no time column")
    cmd.add_argument("--warmup", type=int, default=None, metavar="ROWS",
                     help="train on the samples of the first ROWS rows (default: the first "
                          "STREAMAE_WARMUP_SIZE samples, as the daemon's cold start)")
    cmd.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                     help="score everything with the newest checkpoint in DIR instead")
    cmd.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="report folder: report.md, PNGs, verdicts.csv, summary.json")
    cmd.add_argument("--rates", type=float, nargs="+", default=None,
                     metavar="RATE", help="target false-alarm rates of the sweep (default: "
                                          "1e-2 1e-3 1e-4 1e-5 1e-6)")
    cmd.add_argument("--pick", type=float, default=None, metavar="RATE",
                     help="the false-alarm rate to give settings for")
    cmd.add_argument("--max-alarms-per-day", type=float, default=None, metavar="N",
                     help="give settings for the most sensitive rate with at most N alarms "
                          "a day")
    cmd.add_argument("--max-plots", type=int, default=12, metavar="N",
                     help="PNGs for the N keys with the most alarms")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="streamae", description=DESCRIPTION)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="the daemon: consume, score, publish anomalies")
    run.add_argument("--max-messages", type=int, default=None, help="stop after this many")
    run.add_argument("--timeout", type=float, default=None, help="stop after this many s")
    demo = sub.add_parser("demo", help="produce a synthetic multi-sensor stream")
    demo.add_argument("--count", type=int, default=20_000, help="messages to produce")
    demo.add_argument("--rate", type=float, default=500.0, help="messages/s, 0 = unpaced")
    demo.add_argument("--topic", default=None, help="default: the first input topic")
    demo.add_argument("--pumps", type=int, default=4, help="keys (pumps) to interleave")
    demo.add_argument("--anomaly-rate", type=float, default=0.002,
                      help="anomaly episodes started per reading")
    demo.add_argument("--clean-prefix", type=int, default=CLEAN_PREFIX,
                      help="readings at the start without any anomaly: a clean warm-up "
                           "(0: episodes from the first reading)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the stream")
    demo.add_argument("--scenario", choices=SCENARIOS, default="base",
                      help="a long-lived change on top of the anomalies: poison (one sensor "
                      "+5 scales, last half), ramp (one sensor 0->+5 scales), drift (all "
                      "sensors 0->+4 scales, benign); see streamae/demo.py")
    retrain = sub.add_parser("retrain", help="make the running daemon retrain on recent data")
    retrain.add_argument("--accept-recent", action="store_true", required=True,
                         help="learn the latest readings as normal (after a drift the "
                         "operator accepts), bypassing the gate")
    retrain.add_argument("--url", default=None, help="the daemon's retrain endpoint "
                         "(default: http://127.0.0.1:$STREAMAE_METRICS_PORT/retrain)")
    _add_file_commands(sub)
    _add_latent_commands(sub)
    _add_backtest_command(sub)
    return top


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    top = parser()
    args = top.parse_args(argv)
    if getattr(args, "input_required", False) and args.input is None:
        top.error(f"streamae {args.command}: the following arguments are required: --input")
    return args


COMMANDS = {"run": cmd_run, "demo": cmd_demo, "retrain": cmd_retrain, "train": cmd_train,
            "score": cmd_score, "encode": cmd_encode, "sample": cmd_sample,
            "backtest": cmd_backtest}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = load_settings()
    except StreamaeError as exc:
        print(f"streamae: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    from streamae.scoring import limit_threads

    limit_threads(settings.torch_threads)
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return COMMANDS[args.command](args, settings)
    except StreamaeError as exc:
        log.error("event=fatal error=%s detail=%r", type(exc).__name__, str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
