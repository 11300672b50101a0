"""The daemon's cost against a bare Kafka loop on the same broker, in the same run.

    flock /tmp/streamae-bench.lock .venv/bin/python benchmarks/throughput.py \
        [--messages 50000] [--rounds 1] [--arms ...] [--no-latency]
        [--profile DIR]   # each arm under py-spy (pip install py-spy; CPU figures include it)
        [--stages]        # daemon arms: the main thread's CPU per message by stage
    .venv/bin/python benchmarks/throughput.py --client confluent [--messages N --rounds 3]

Uses STREAMAE_BENCH_BOOTSTRAP when set, else starts the project's own broker. The workload
is the issue's: demo sensor readings (8 named features, 4 keys, ~1% anomalous) on a topic of
4 partitions, once as JSON and once as little-endian float32 bytes, and a model loaded
from a checkpoint. Every arm runs in a child process of its own (its RSS is its own) and
reads the whole topic with a fresh consumer group; arms alternate bare loop and daemon
within each round. Per arm it prints:

* CPU us/msg: the child's CPU time (all its threads) from its first record to the end,
  divided by the messages (steadier on a shared machine than msgs/s); retrain children's
  CPU is given apart ("+ N in the worker");
* msgs/s over the same span, and both as a ratio to the bare loop of the same format;
* RSS at the end (VmRSS) and its peak (VmHWM).

Latency (``--no-latency`` skips it): the daemon with defaults and the scores topic on, fed
at 1,800 msg/s (the issue's point) and at half the measured maximum with the scores topic
on (``--latency-rate``); both topics use broker time (``LogAppendTime``), so latency =
the score record's append - the input's append (``--latency-scores-format batch``: the
append of the batch record that holds the reading's score).

Clients: an arm named ``confluent/...`` (``confluent/bare:json``,
``confluent/daemon:binary:off``) runs on confluent-kafka (``STREAMAE_KAFKA__CLIENT``), in a
child of its own like every arm; ``--client confluent`` runs both transports' bare loops and
daemons, JSON and binary, alternated (docs/operations.md has its table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_broker import bench_broker

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 4
FLOAT32 = [("content-type", b"application/x-float32")]
BARE_POLL = 500  # the bare loop: poll 500, decode to float32, commit
DAEMON_ARMS = {  # arm -> (format, extra settings)
    "daemon:json:off": ("json", {"STREAMAE_RETRAIN__ENABLED": "false"}),
    "daemon:json:default": ("json", {}),
    # retraining on but never due: the goal's "no retrain running" (hooks, gate, rings)
    "daemon:json:idle": ("json", {"STREAMAE_RETRAIN__EVERY_WINDOWS": "1000000000",
                                  "STREAMAE_RETRAIN__EVERY_SECONDS": "1000000000"}),
    # against daemon:json:off: the scores topic is the only difference
    "daemon:json:scores": ("json", {"STREAMAE_RETRAIN__ENABLED": "false",
                                    "STREAMAE_KAFKA__SCORES_TOPIC": "{topic}-scores"}),
    # the same, scores in the batch format (one record per input partition and turn)
    "daemon:json:scores-batch": ("json", {"STREAMAE_RETRAIN__ENABLED": "false",
                                          "STREAMAE_KAFKA__SCORES_TOPIC": "{topic}-scores",
                                          "STREAMAE_KAFKA__SCORES_FORMAT": "batch"}),
    "daemon:binary:off": ("binary", {"STREAMAE_RETRAIN__ENABLED": "false"}),
    "daemon:binary:default": ("binary", {}),
}
# --client confluent: both transports, bare and daemon, alternated
TRANSPORT_ARMS = [f"{client}{arm}" for fmt in ("json", "binary")
                  for client in ("", "confluent/") for arm in (f"bare:{fmt}", f"daemon:{fmt}:off")]
# Alternating order: each daemon arm follows a bare loop of its format.
DEFAULT_ARMS = ["bare:json", "daemon:json:off", "bare:binary", "daemon:binary:off",
                "bare:json", "daemon:json:default", "bare:binary", "daemon:binary:default",
                "bare:json", "daemon:json:scores", "bare:json", "daemon:json:scores-batch"]


# ------------------------------------------------------------------ measuring (children)


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


class Span:
    """CPU and wall time from the first record to the end."""

    def __init__(self) -> None:
        self.cpu0 = self.wall0 = self.thread0 = None

    def start(self) -> None:
        if self.wall0 is None:
            self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
            self.thread0 = time.thread_time()

    def result(self, count: int) -> dict:
        cpu, wall = time.process_time() - self.cpu0, time.perf_counter() - self.wall0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        rss, peak = rss_mb()
        return {"messages": count, "cpu_us": cpu / count * 1e6, "rate": count / wall,
                "worker_cpu_us": (children.ru_utime + children.ru_stime) / count * 1e6,
                "rss_mb": rss, "peak_mb": peak}


def bare_kafka_python(bootstrap: str, topic: str, fmt: str, count: int) -> dict:
    """The baseline: poll 500, decode each record to float32, commit each poll."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=uuid.uuid4().hex,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             max_poll_records=BARE_POLL)
    span, seen = Span(), 0
    while seen < count:
        polled = consumer.poll(timeout_ms=100)
        if polled:
            span.start()
        for batch in polled.values():
            for record in batch:
                if fmt == "json":
                    body = json.loads(record.value)
                    np.array(list(body["values"].values()), dtype=np.float32)
                else:
                    np.frombuffer(record.value, dtype="<f4")
            seen += len(batch)
        if polled:
            consumer.commit()
    result = span.result(seen)
    consumer.close()
    return result


def bare_confluent(bootstrap: str, topic: str, fmt: str, count: int) -> dict:
    """The same loop on confluent-kafka: consume 500, decode each, commit each batch."""
    import confluent_kafka as ck

    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                            "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    span, seen = Span(), 0
    while seen < count:
        messages = [m for m in consumer.consume(BARE_POLL, 0.1) if m.error() is None]
        if messages:
            span.start()
        for message in messages:
            if fmt == "json":
                body = json.loads(message.value())
                np.array(list(body["values"].values()), dtype=np.float32)
            else:
                np.frombuffer(message.value(), dtype="<f4")
        seen += len(messages)
        if messages:
            consumer.commit(asynchronous=False)
    result = span.result(seen)
    consumer.close()
    return result


# A transport registers its bare loop here: (bootstrap, topic, format, count) -> figures.
BARE_LOOPS: dict[str, Callable[[str, str, str, int], dict]] = {
    "kafka-python": bare_kafka_python,
    "confluent": bare_confluent,
}


def split_arm(arm: str) -> tuple[str, str, str]:
    """``[client/]bare:FORMAT`` or ``[client/]daemon:FORMAT:SETTINGS`` -> (client, arm
    without the client, format); the client is kafka-python unless named."""
    client, _, name = arm.rpartition("/")
    return client or "kafka-python", name, name.split(":")[1]


# --stages: the main thread's CPU per message in each of these (inclusive: _score holds
# the four after it); "other threads" is the process's CPU less the main thread's.
STAGES = [("streamae.pipeline", "Daemon", "step"), ("streamae.pipeline", "Daemon", "_poll"),
          ("streamae.kafka_io", "OffsetTracker", "started"),
          ("streamae.intake", "Decoding", "take"), ("streamae.pipeline", "Daemon", "_score"),
          ("streamae.scoring", "Scorer", "score"),
          ("streamae.incident_feed", "IncidentFeed", "observe"),
          ("streamae.pipeline", "Daemon", "_publish_anomaly"),
          ("streamae.pipeline", "Daemon", "_publish_scores"),
          ("streamae.pipeline", "Daemon", "_deliver_and_commit")]


def time_stages() -> dict[str, float]:
    """Wrap each stage to add up the main thread's CPU time spent in it."""
    import importlib

    spent: dict[str, float] = {}
    for module, cls, name in STAGES:
        owner = getattr(importlib.import_module(module), cls)
        spent[f"{cls}.{name}"] = 0.0
        setattr(owner, name, _timed(getattr(owner, name), f"{cls}.{name}", spent))
    return spent


def _timed(method: Callable, label: str, spent: dict[str, float]) -> Callable:
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return method(*args, **kwargs)
        finally:
            spent[label] += time.thread_time() - started
    return wrapper


def daemon_arm(count: int, ready_file: str | None) -> dict:
    """The daemon as ``streamae run`` wires it (model roles, drift, incidents), settings
    from the environment the parent set."""
    from streamae.kafka_io import build_consumer, build_producer
    from streamae.live import ModelSlot, load_live
    from streamae.pipeline import Daemon
    from streamae.scoring import limit_threads
    from streamae.service import attach_model_roles, compacted_topics, connect, output_topics
    from streamae.settings import Settings

    settings = Settings()
    stages = time_stages() if os.environ.get("STREAMAE_BENCH_STAGES") else None
    connect(settings.kafka, output_topics(settings), threading.Event(),
            compacted_topics(settings))
    limit_threads(settings.torch_threads)
    slot = ModelSlot()
    slot.swap(load_live(settings.checkpoints.directory, settings.device,
                        settings.batch.max_size))
    daemon = Daemon(settings, build_consumer(settings.kafka, settings.batch.max_size),
                    build_producer(settings.kafka), slot=slot)
    span = Span()
    daemon.scored_hooks.append(lambda *_: span.start())
    if ready_file:
        threading.Thread(target=_announce_ready, args=(daemon, ready_file), daemon=True).start()
    with contextlib.ExitStack() as stack:
        attach_model_roles(settings, daemon, stack)
        stats = daemon.run(max_messages=count, timeout_s=900)
        result = span.result(stats.consumed)
    result["anomalies"] = stats.anomalies
    if stages is not None:
        result["stages_us"] = {k: v / stats.consumed * 1e6 for k, v in stages.items()}
        main_cpu = time.thread_time() - span.thread0
        result["stages_us"]["other threads"] = result["cpu_us"] - main_cpu / stats.consumed * 1e6
    return result


def _announce_ready(daemon, path: str) -> None:
    while not daemon.broker_ok:
        time.sleep(0.05)
    Path(path).write_text("ready")


def child(args: argparse.Namespace) -> int:
    if args.arm.startswith("bare:"):
        result = BARE_LOOPS[args.client](args.bootstrap, args.topic, args.arm.split(":")[1],
                                         args.messages)
    else:
        result = daemon_arm(args.messages, args.ready_file)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------ orchestration (parent)


def create_topic(bootstrap: str, name: str, log_append_time: bool = False) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    configs = {"message.timestamp.type": "LogAppendTime"} if log_append_time else {}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, PARTITIONS, 1, topic_configs=configs)])
    admin.close()
    return name


def demo_payloads(count: int, seed: int = 1) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(keys, JSON bodies, float32 bodies) of ``count`` demo readings."""
    from streamae.demo import DemoStream

    readings = DemoStream(seed=seed, anomaly_rate=0.0003).take(count)
    keys = [r.key.encode() for r in readings]
    bodies = [json.dumps(r.as_message()).encode() for r in readings]
    floats = [np.array(list(r.values.values()), dtype="<f4").tobytes() for r in readings]
    return keys, bodies, floats


def fill(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes],
         headers: list | None = None) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                             batch_size=256 * 1024)
    for key, value in zip(keys, values, strict=True):
        producer.send(topic, key=key, value=value, headers=headers)
    producer.flush()
    producer.close()


def train_checkpoint(directory: Path, data: list[bytes]) -> None:
    from streamae.checkpoints import save_checkpoint
    from streamae.live import calibrated_threshold, train_detector
    from streamae.settings import Settings

    settings = Settings()
    array = np.stack([np.frombuffer(v, dtype="<f4") for v in data[:5000]])
    detector = train_detector(array, settings.model, "cpu")
    threshold = calibrated_threshold(settings.threshold, detector)
    save_checkpoint(directory, detector, threshold_state=threshold.state(),
                    metadata={"origin": "bench"})


def scoring_only(checkpoint: Path, floats: list[bytes]) -> list[tuple[int, float]]:
    """Vectors/s of the scorer alone by batch size (the chunk the daemon scores in)."""
    from streamae.live import load_live
    from streamae.scoring import limit_threads

    limit_threads(1)
    scorer = load_live(checkpoint, "cpu", 4096).scorer
    data = np.stack([np.frombuffer(v, dtype="<f4") for v in floats[:4096]])
    figures = []
    for size in (256, 1024, 4096):
        batch = data[:size]
        scorer.score(batch)  # warm
        reps = max(3, 40_000 // size)
        started = time.process_time()
        for _ in range(reps):
            scorer.score(batch)
        figures.append((size, reps * size / (time.process_time() - started)))
    return figures


def arm_env(bootstrap: str, topic: str, work: Path, client: str, extra: dict,
            stages: bool = False) -> dict:
    env, arm_id = dict(os.environ), uuid.uuid4().hex[:6]
    env.update({
        "PYTHONPATH": f"{ROOT}{os.pathsep}{env.get('PYTHONPATH', '')}",
        "STREAMAE_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMAE_KAFKA__INPUT_TOPICS": topic,
        "STREAMAE_KAFKA__OUTPUT_TOPIC": f"{topic}-anomalies",
        "STREAMAE_KAFKA__DEAD_LETTER_TOPIC": f"{topic}-dead",
        # each arm its own: a later arm would restore an earlier one's incident state
        "STREAMAE_KAFKA__INCIDENTS_TOPIC": f"{topic}-incidents-{arm_id}",
        "STREAMAE_KAFKA__INCIDENT_STATE_TOPIC": f"{topic}-incident-state-{arm_id}",
        "STREAMAE_KAFKA__MODEL_TOPIC": f"{topic}-model",
        "STREAMAE_KAFKA__GROUP_ID": uuid.uuid4().hex,
        "STREAMAE_CHECKPOINTS__DIRECTORY": str(work / f"ck-{uuid.uuid4().hex[:6]}"),
        "STREAMAE_METRICS_PORT": "0",
    })
    if client != "kafka-python":
        env["STREAMAE_KAFKA__CLIENT"] = client
    if stages:
        env["STREAMAE_BENCH_STAGES"] = "1"
    env.update({name: value.format(topic=topic) for name, value in extra.items()})
    return env


def run_child(arm: str, args: argparse.Namespace, topic: str, work: Path,
              extra: dict | None = None, ready_file: str | None = None,
              count: int | None = None) -> subprocess.Popen:
    client, arm, _ = split_arm(arm)
    extra = {"STREAMAE_DEVICE": args.device, **(extra or {})}
    env = arm_env(args.bootstrap, topic, work, client, extra, args.stages)
    # each daemon arm starts from the same trained checkpoint, in a directory of its own
    target = Path(env["STREAMAE_CHECKPOINTS__DIRECTORY"])
    subprocess.run(["cp", "-r", str(work / "checkpoint"), str(target)], check=True)
    command = [sys.executable, __file__, "--child", "--arm", arm, "--topic", topic,
               "--bootstrap", args.bootstrap, "--client", client,
               "--messages", str(count or args.messages)]
    if ready_file:
        command += ["--ready-file", ready_file]
    if args.profile:  # py-spy's raw (collapsed) stacks of each arm, for a profile
        folder = Path(args.profile)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{arm.replace(':', '-')}-{uuid.uuid4().hex[:4]}.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        command = [spy, "record", "-r", "250", "-f", "raw", "-o", str(out), "--", *command]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def result_of(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"arm failed (exit {process.returncode})")
    return json.loads(lines[-1][7:])


def latency(args: argparse.Namespace, topic: str, work: Path, rate: float,
            keys: list[bytes], bodies: list[bytes]) -> dict:
    """Daemon defaults + scores topic, fed at ``rate``; broker-time latency percentiles."""
    from kafka import KafkaConsumer, KafkaProducer

    from streamae.messages import unbatch_scores

    count = int(rate * args.latency_seconds)
    scores = create_topic(args.bootstrap, f"{topic}-scores", log_append_time=True)
    ready = str(work / f"ready-{uuid.uuid4().hex[:6]}")
    process = run_child(args.latency_arm, args, topic, work,
                        {**DAEMON_ARMS[args.latency_arm][1],
                         "STREAMAE_KAFKA__SCORES_TOPIC": scores,
                         "STREAMAE_KAFKA__SCORES_FORMAT": args.latency_scores_format,
                         "STREAMAE_KAFKA__AUTO_OFFSET_RESET": "latest"}, ready, count)
    while not Path(ready).exists():
        if process.poll() is not None:
            raise RuntimeError("latency arm ended before it was ready")
        time.sleep(0.1)
    time.sleep(2.0)  # the assignment's positions are fetched before anything is produced
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks=1, linger_ms=0)
    started = time.perf_counter()
    for n in range(count):
        due = started + n / rate
        if (wait := due - time.perf_counter()) > 0:
            time.sleep(wait)
        producer.send(topic, key=keys[n % len(keys)], value=bodies[n % len(bodies)])
    producer.flush()
    producer.close()
    result = result_of(process)
    appended = {}
    consumer = KafkaConsumer(topic, scores, bootstrap_servers=args.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    delays = []
    for record in consumer:
        if record.topic == topic:
            appended[(record.partition, record.offset)] = record.timestamp
            continue
        body = json.loads(record.value)
        for line in unbatch_scores(body) if "offsets" in body else [body]:
            appended.setdefault(("score", line["partition"], line["offset"]), record.timestamp)
    consumer.close()
    for key, ts in appended.items():
        if key[0] == "score" and (key[1], key[2]) in appended:
            delays.append(ts - appended[(key[1], key[2])])
    delays.sort()
    return {"rate": rate, "messages": count, "measured": len(delays),
            "p50_ms": float(np.percentile(delays, 50)), "p99_ms": float(np.percentile(delays, 99)),
            "rss_mb": result["rss_mb"]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--device", default="cpu", help="the daemon arms' STREAMAE_DEVICE")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--client", choices=["kafka-python", "confluent"],
                        default="kafka-python",
                        help="confluent: compare the transports (TRANSPORT_ARMS) unless "
                             "--arms names others ('confluent/daemon:json:off')")
    parser.add_argument("--arms", nargs="*", default=DEFAULT_ARMS)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--latency-rate", type=float, nargs="*", default=[1800.0, 0.0],
                        help="msg/s; 0: half the measured rate of daemon:json:scores "
                             "(default: 1800, the issue's point, and 0)")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-arm", default="daemon:json:default", choices=DAEMON_ARMS)
    parser.add_argument("--latency-scores-format", choices=["record", "batch"],
                        default="record", help="the latency arm's scores topic format")
    parser.add_argument("--stages", action="store_true",
                        help="daemon arms: the main thread's CPU per message by stage")
    parser.add_argument("--profile", help="a folder: each arm runs under py-spy record")
    # child process arguments
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    work = Path(tempfile.mkdtemp(prefix="streamae-bench-"))
    if args.client == "confluent" and args.arms == DEFAULT_ARMS:
        args.arms, args.no_latency = TRANSPORT_ARMS, True
    with bench_broker(work / "kafka", 19392) as bootstrap:
        args.bootstrap = bootstrap
        keys, bodies, floats = demo_payloads(args.messages)
        run_id = uuid.uuid4().hex[:8]
        topics = {"json": create_topic(bootstrap, f"bench-{run_id}-json"),
                  "binary": create_topic(bootstrap, f"bench-{run_id}-binary")}
        fill(bootstrap, topics["json"], keys, bodies)
        fill(bootstrap, topics["binary"], keys, floats, FLOAT32)
        os.environ["STREAMAE_MODEL__EPOCHS"] = os.environ.get("STREAMAE_MODEL__EPOCHS", "30")
        train_checkpoint(work / "checkpoint", floats)
        figures: dict[str, list[dict]] = {}
        for _ in range(args.rounds):
            for arm in args.arms:
                _, name, fmt = split_arm(arm)
                extra = DAEMON_ARMS[name][1] if name in DAEMON_ARMS else {}
                result = result_of(run_child(arm, args, topics[fmt], work, extra))
                figures.setdefault(arm, []).append(result)
                print(f"  {arm:<24} {result['cpu_us']:7.1f} us/msg {result['rate']:9,.0f} "
                      f"msg/s rss {result['rss_mb']:5.0f} MB", flush=True)
                if stages := result.get("stages_us"):
                    print("    CPU us/msg by stage: " + ", ".join(
                        f"{name} {us:.2f}" for name, us in stages.items()), flush=True)
        report(args, figures)
        print("scoring only (dense, 8 features, 1 thread, CPU time): " + ", ".join(
            f"batch {size}: {rate / 1e6:.2f}M vectors/s"
            for size, rate in scoring_only(work / "checkpoint", floats)), flush=True)
        # half the maximum of a daemon with the scores topic on (the latency arm's setup)
        scores = figures.get("daemon:json:scores")
        half = 0.5 * statistics.median(r["rate"] for r in scores) if scores else 1800.0
        for n, rate in enumerate([] if args.no_latency else args.latency_rate):
            topic = create_topic(bootstrap, f"bench-{run_id}-lat{n}", log_append_time=True)
            lat = latency(args, topic, work, rate or half, keys, bodies)
            point = " (half the scores-on maximum)" if not rate else ""
            print(f"latency at {lat['rate']:,.0f} msg/s{point}, {args.latency_arm} + scores "
                  f"topic, broker time: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms "
                  f"({lat['measured']} of {lat['messages']} messages); "
                  f"RSS {lat['rss_mb']:.0f} MB", flush=True)
    return 0


def median(results: list[dict], name: str) -> float:
    return statistics.median(r[name] for r in results)


def report(args: argparse.Namespace, figures: dict[str, list[dict]]) -> None:
    print(f"\nmessages={args.messages} rounds={args.rounds} partitions={PARTITIONS} "
          "(medians; range over rounds; ratios to the bare kafka-python loop)")
    print("| arm | msgs/s | ratio to bare | CPU us/msg | CPU ratio to bare | RSS MB (peak) |")
    print("|---|---|---|---|---|---|")
    for arm, results in figures.items():
        bare = figures.get(f"bare:{split_arm(arm)[2]}")  # kafka-python's: the baseline
        rate, cpu = median(results, "rate"), median(results, "cpu_us")
        worker = median(results, "worker_cpu_us")
        ratio = f"{rate / median(bare, 'rate'):.2f}" if bare else "-"
        cpu_ratio = f"{cpu / median(bare, 'cpu_us'):.2f}" if bare else "-"
        low, high = min(r["rate"] for r in results), max(r["rate"] for r in results)
        spread = f" ({low:,.0f}-{high:,.0f})" if len(results) > 1 else ""
        extra = f" + {worker:.0f} in the worker" if worker >= 0.5 else ""
        print(f"| {arm} | {rate:,.0f}{spread} | {ratio} | {cpu:.1f}{extra} | "
              f"{cpu_ratio} | {median(results, 'rss_mb'):.0f} "
              f"({median(results, 'peak_mb'):.0f}) |")
    off = figures.get("daemon:json:off")
    for arm, form in (("daemon:json:scores", "record"), ("daemon:json:scores-batch", "batch")):
        if off and (on := figures.get(arm)):
            print(f"scores topic on ({form} format) / off, CPU per message: "
                  f"{median(on, 'cpu_us') / median(off, 'cpu_us'):.2f} (goal <= 1.4)")
    for fmt, goal in (("binary", 3.0), ("json", 2.0)):
        python, confluent = (figures.get(f"{c}daemon:{fmt}:off") for c in ("", "confluent/"))
        if python and confluent:
            print(f"daemon confluent / kafka-python, {fmt}: msgs/s "
                  f"{median(confluent, 'rate') / median(python, 'rate'):.2f} (goal >= {goal}), "
                  f"CPU per message {median(confluent, 'cpu_us') / median(python, 'cpu_us'):.2f}")


if __name__ == "__main__":
    sys.exit(main())
