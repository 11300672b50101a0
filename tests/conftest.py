"""Fixtures shared by every tier: a real Kafka broker and factories for fresh topics.

Where the broker comes from, first match wins:
1. a Docker engine answers: testcontainers' Kafka container;
2. ``STREAMAE_TEST_BOOTSTRAP`` is set: that address;
3. otherwise the project's own broker (scripts/local_kafka.py), started for the session.
With ``CI=true`` a broker that cannot be had fails the tests; it never skips them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def load_script(name: str, relative: str):
    """A script of the project (scripts/, benchmarks/) imported as module ``name``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_local_kafka():
    return load_script("local_kafka", "scripts/local_kafka.py")


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port with a free neighbour too (the local broker's controller takes port + 1),
    below the kernel's ephemeral range where it can: a port from that range can be taken by
    any client's outgoing connection between this check and the broker binding it (CI saw
    a broker's controller fail with "Address already in use")."""
    try:
        first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 0
    rng = random.Random()
    for _ in range(200):
        if first_ephemeral > 12_000:
            port = rng.randrange(10_000, first_ephemeral - 2)
        else:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError("no free port pair found")


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and no Kafka broker: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker: {reason}")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The daemon's default (STREAMAE_TORCH_THREADS=1): tiny models only lose from more
    intra-op threads, badly so on a loaded 2-core machine (torch's and numpy's BLAS)."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The bootstrap address of a real Apache Kafka broker for this test session."""
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    if address := os.environ.get("STREAMAE_TEST_BOOTSTRAP"):
        yield address
        return
    local_kafka = load_local_kafka()
    data = tmp_path_factory.mktemp("kafka")
    port = free_port()
    try:
        local_kafka.start(port, data)
    except SystemExit as exc:
        unavailable(str(exc))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        local_kafka.stop(data)


@pytest.fixture
def restartable_broker(tmp_path: Path) -> Iterator[object]:
    """A broker of the test's own that it may stop and start (the project's script)."""
    local_kafka = load_local_kafka()

    class Broker:
        port = free_port()
        bootstrap = f"127.0.0.1:{port}"

        def start(self) -> None:
            local_kafka.start(self.port, tmp_path)

        def stop(self) -> None:
            local_kafka.stop(tmp_path)

    broker = Broker()
    try:
        broker.start()
    except SystemExit as exc:
        unavailable(str(exc))
    yield broker
    broker.stop()


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory: a fresh, uniquely named topic with the partitions asked for."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="streamae-tests")

    def create(prefix: str = "t", partitions: int = 1, compacted: bool = False) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        configs = {"cleanup.policy": "compact"} if compacted else {}
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        return name

    yield create
    admin.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """In CI a skipped test is a failure (GPU tests aside: CI has no GPU). A strict xfail
    is not a skip: it records a known gap, and turns red when the gap closes."""
    outcome = yield
    report = outcome.get_result()
    expected_failure = hasattr(report, "wasxfail")  # xfail(strict=True): a known gap
    if IN_CI and report.skipped and not expected_failure and "gpu" not in item.keywords:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which counts as a failure: {report.longrepr}"


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """``streamae.cli.main`` configures the root logger; give pytest's handlers back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
