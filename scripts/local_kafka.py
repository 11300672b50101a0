#!/usr/bin/env python3
"""A real single-node Apache Kafka broker for development and tests, without Docker.

Fetches Apache Kafka's own jars from Maven Central with Maven (into a cache folder that
later runs reuse), formats KRaft storage and runs one combined broker+controller on
127.0.0.1. Standard library only, so it runs before anything is installed.

    python3 scripts/local_kafka.py start [--port 9092] [--data-dir DIR]
        [--sasl-port 9094 --scram-user alice:alice-secret ...]   # SASL/SCRAM listener too
    python3 scripts/local_kafka.py stop  [--data-dir DIR]
    python3 scripts/local_kafka.py status [--port 9092]
    python3 scripts/local_kafka.py fetch

Environment: STREAMAE_KAFKA_VERSION (default below), STREAMAE_KAFKA_CACHE (jar cache,
default ~/.cache/streamae/kafka-<version>).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

KAFKA_VERSION = os.environ.get("STREAMAE_KAFKA_VERSION", "4.1.1")
DEFAULT_PORT = 9092
DEFAULT_DATA_DIR = Path(tempfile.gettempdir()) / "streamae-kafka"

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamae</groupId><artifactId>local-kafka</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>2.24.3</version></dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""

SERVER_PROPERTIES = """process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
"""


# A SASL_PLAINTEXT listener with SCRAM-SHA-256/512 beside the PLAINTEXT one (which the
# controller and inter-broker traffic keep using); users are created when storage is
# formatted (KRaft has no ZooKeeper to hold them).
SASL_LISTENERS = """
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},\
SASL_PLAINTEXT://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,\
SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
org.apache.kafka.common.security.scram.ScramLoginModule required;
"""


def log(message: str) -> None:
    print(f"local_kafka: {message}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "streamae" / f"kafka-{KAFKA_VERSION}"
    return Path(os.environ.get("STREAMAE_KAFKA_CACHE", default))


def require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SystemExit(
            f"local_kafka: '{tool}' was not found. {hint}\n"
            "Or skip the local broker and point streamae at an existing one:\n"
            "  export STREAMAE_KAFKA__BOOTSTRAP_SERVERS=host:9092   (the daemon)\n"
            "  export STREAMAE_TEST_BOOTSTRAP=host:9092              (the tests)"
        )
    return path


def java_version(java: str) -> int:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    quoted = out.split('"')[1] if '"' in out else "0"
    major = quoted.split(".")[0]
    return int(major) if major.isdigit() else 0


def fetch() -> Path:
    """Download the broker's jars once; later calls return the cached folder at once."""
    libs = cache_dir() / "libs"
    if (cache_dir() / "COMPLETE").exists():
        return libs
    java = require("java", "Install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre).")
    if java_version(java) < 17:
        raise SystemExit("local_kafka: Kafka 4 needs Java 17 or newer; `java -version` is older.")
    mvn = require("mvn", "Install Apache Maven (Debian: apt-get install maven).")
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / "pom.xml").write_text(POM.format(version=KAFKA_VERSION))
    log(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {libs}")
    started = time.monotonic()
    cmd = [mvn, "-B", "-q", "-f", str(cache_dir() / "pom.xml"), "dependency:copy-dependencies",
           f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        output = result.stdout[-4000:] + result.stderr[-4000:]
        raise SystemExit(f"local_kafka: maven failed:\n{output}")
    (cache_dir() / "COMPLETE").write_text(KAFKA_VERSION)
    log(f"fetched in {time.monotonic() - started:.1f}s")
    return libs


def java_command(libs: Path, main: str, *args: str, heap: str = "512m") -> list[str]:
    return [require("java", ""), f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true", "-cp", f"{libs}/*", main, *args]


def api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka broker answers an ApiVersions request on 127.0.0.1:port."""
    client_id = b"local_kafka"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = sock.recv(4)
            if len(header) < 4:
                return False
            (size,) = struct.unpack(">i", header)
            reply = b""
            while len(reply) < min(size, 6):
                chunk = sock.recv(size - len(reply))
                if not chunk:
                    return False
                reply += chunk
            correlation, error = struct.unpack(">ih", reply[:6])
            return correlation == 7 and error == 0
    except OSError:
        return False


def write_config(data: Path, port: int, controller_port: int,
                 sasl_port: int | None = None) -> Path:
    data.mkdir(parents=True, exist_ok=True)
    props = data / "server.properties"
    text = SERVER_PROPERTIES.format(port=port, controller_port=controller_port, data=data)
    if sasl_port is not None:
        kept = [line for line in text.splitlines() if not line.startswith(
            ("listeners=", "advertised.listeners=", "listener.security.protocol.map="))]
        text = "\n".join(kept) + SASL_LISTENERS.format(
            port=port, controller_port=controller_port, sasl_port=sasl_port)
    props.write_text(text)
    level = os.environ.get("STREAMAE_KAFKA_LOG_LEVEL", "INFO")
    (data / "log4j2.properties").write_text(LOG4J2.format(log=data / "server.log", level=level))
    return props


def format_storage(libs: Path, data: Path, props: Path,
                   scram_users: dict[str, str] | None = None) -> None:
    if (data / "logs" / "meta.properties").exists():
        return
    # One "=" argument: a random id may start with "-", which argparse would take for an
    # option ("argument --cluster-id/-t: expected one argument").
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    users = []
    for name, password in (scram_users or {}).items():
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            users += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    cmd = java_command(libs, "kafka.tools.StorageTool", "format", "--standalone",
                       f"--cluster-id={cluster_id}", "-c", str(props), *users, heap="256m")
    result = subprocess.run(cmd, capture_output=True, text=True, env=java_env(data))
    if result.returncode != 0:
        raise SystemExit(f"local_kafka: storage format failed:\n{result.stdout}{result.stderr}")


def java_env(data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["JAVA_TOOL_OPTIONS"] = f"-Dlog4j2.configurationFile={data / 'log4j2.properties'}"
    return env


def read_pid(data: Path) -> int | None:
    try:
        pid = int((data / "broker.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def start(port: int, data: Path, timeout: float = 120.0, sasl_port: int | None = None,
          scram_users: dict[str, str] | None = None) -> None:
    """Start a broker on ``port`` (controller on port + 1); with ``sasl_port`` also a
    SASL_PLAINTEXT listener there, with SCRAM users ``{name: password}``."""
    if api_versions_ok(port):
        log(f"a broker already answers on 127.0.0.1:{port}")
        return
    began = time.monotonic()
    libs = fetch()
    props = write_config(data, port, port + 1, sasl_port)
    format_storage(libs, data, props, scram_users)
    with open(data / "stdout.log", "ab") as out:
        proc = subprocess.Popen(java_command(libs, "kafka.Kafka", str(props)), stdout=out,
                                stderr=subprocess.STDOUT, env=java_env(data),
                                start_new_session=True)
    (data / "broker.pid").write_text(str(proc.pid))
    while time.monotonic() - began < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"local_kafka: broker exited early; see {data}/server.log")
        if api_versions_ok(port):
            log(f"broker {KAFKA_VERSION} ready on 127.0.0.1:{port} "
                f"in {time.monotonic() - began:.1f}s (pid {proc.pid})")
            return
        time.sleep(0.2)
    stop(data)
    raise SystemExit(f"local_kafka: broker not ready after {timeout:.0f}s; see {data}/server.log")


def stop(data: Path, timeout: float = 30.0) -> None:
    pid = read_pid(data)
    if pid is None:
        log("no broker running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        reap(pid)
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (data / "broker.pid").unlink(missing_ok=True)
    log(f"broker stopped (pid {pid})")


def reap(pid: int) -> None:
    """Collect the exit status when this process started the broker itself."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "fetch"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--sasl-port", type=int, default=None,
                        help="also listen with SASL_PLAINTEXT (SCRAM-SHA-256/512) here")
    parser.add_argument("--scram-user", action="append", default=[], metavar="NAME:PASSWORD",
                        help="a SCRAM user created at format time (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch())
    elif args.command == "start":
        users = dict(user.split(":", 1) for user in args.scram_user)
        start(args.port, args.data_dir, sasl_port=args.sasl_port, scram_users=users)
    elif args.command == "stop":
        stop(args.data_dir)
    else:
        up = api_versions_ok(args.port)
        print(f"127.0.0.1:{args.port} {'up' if up else 'down'}")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
