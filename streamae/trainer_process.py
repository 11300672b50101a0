"""Training in a child process that exists only while a retrain runs.

On CPU a training thread shares the GIL with the scoring loop and slows it several-fold, so
training runs in a process of its own. That process is started when a retrain is due and
ends with it, so it costs nothing (memory, CPU, a warm-up) while no retrain runs, and its
memory goes back to the system after each retrain.

The scoring process itself never imports torch on a CPU (``streamae.scoring``): the child
does, for its training alone, and its ~550 MB go back with it.

Start method: ``fork`` where the platform has it (Linux): the child starts in
milliseconds with the code already imported (a ``spawn`` child imports all of streamae
first). ``spawn`` elsewhere, or when asked. A fork child touches only numpy, torch and a
pipe; CUDA never runs in it (on a GPU training runs in a thread on its own stream instead).
The child reports each epoch's validation loss over the pipe, for progress logs.

Stopping: the stop event is passed on to the child, which ends training at its next batch;
a child still alive ``grace_s`` later is terminated, then killed, so a SIGTERM to the
daemon ends within seconds whatever the trainer is doing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np

from streamae.checkpoints import checkpoint_from_bytes, checkpoint_to_bytes
from streamae.exceptions import ModelError
from streamae.live import train_detector
from streamae.scoring import Detector, resolve_device
from streamae.settings import ModelSettings

Progress = Callable[[int, float], None]  # (epoch, validation loss) after each epoch

log = logging.getLogger(__name__)

NICENESS = 10  # below the scoring loop: on a busy node the scheduler favours scoring
POLL_S = 0.2


def _child(conn: Connection, stop: threading.Event, data: np.ndarray, model: ModelSettings,
           device: str, normalisation: str, threads: int) -> None:
    """The child's whole life: train (reporting each epoch), send the checkpoint blob (or
    the error) back."""
    _stop_when_orphaned(stop)
    try:
        os.nice(NICENESS)
        import torch

        torch.set_num_threads(threads)
        detector = train_detector(data, model, device,
                                  lambda epoch, loss: conn.send(("progress", epoch, loss)),
                                  stop, normalisation)
        conn.send(("ok", checkpoint_to_bytes(detector, {}, {}, 0)))
    except BaseException as exc:  # reported to the parent (KeyboardInterrupt too)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _stop_when_orphaned(stop: threading.Event) -> None:
    """A parent killed outright (SIGKILL, OOM) cannot stop its child: the child watches for
    being re-parented and stops training at its next batch, so nothing lingers."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(POLL_S * 5):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def runs_in_process(executor: str, device: str) -> bool:
    """Where training runs: "auto" is a process on a CPU (its own GIL, and torch stays out
    of the scoring process), a thread on a GPU (its own CUDA stream)."""
    if executor != "auto":
        return executor == "process"
    return not resolve_device(device).startswith("cuda")


def start_method(requested: str = "auto", device: str = "cpu") -> str:
    """``fork`` where available (fast start), else ``spawn``; ``spawn`` for CUDA, which a
    forked child cannot use once the parent did; an explicit choice wins."""
    if requested != "auto":
        return requested
    if device.startswith("cuda") or "fork" not in multiprocessing.get_all_start_methods():
        return "spawn"
    return "fork"


class ProcessTrainer:
    """``train_detector`` in a child started per call (module docstring)."""

    def __init__(self, model: ModelSettings, device: str, threads: int,
                 normalisation: str = "robust_z", method: str = "auto",
                 grace_s: float = 2.0) -> None:
        self.model, self.device, self.normalisation = model, device, normalisation
        self.threads, self.grace_s = threads, grace_s
        self.context = multiprocessing.get_context(start_method(method, device))
        self.started_s: float | None = None  # how long the last child took to start
        self._lock = threading.Lock()
        self._child: multiprocessing.process.BaseProcess | None = None

    @property
    def alive(self) -> bool:
        """True while a training child exists."""
        child = self._child
        return child is not None and child.is_alive()

    def __call__(self, data: np.ndarray, stop: threading.Event,
                 progress: Progress | None = None) -> Detector:
        receive, send = self.context.Pipe(duplex=False)
        child_stop = self.context.Event()
        began = time.monotonic()
        child = self.context.Process(
            target=_child, name="streamae-trainer", daemon=True,
            args=(send, child_stop, data, self.model, self.device, self.normalisation,
                  self.threads))
        with self._lock:
            if stop.is_set():
                raise ModelError("stopped before training started")
            child.start()
            self._child = child
        send.close()
        self.started_s = time.monotonic() - began
        log.info("event=trainer_started pid=%s method=%s seconds=%.2f", child.pid,
                 self.context.get_start_method(), self.started_s)
        try:
            return self._wait(child, receive, child_stop, stop, progress)
        finally:
            receive.close()
            self._end(child)

    def _wait(self, child: multiprocessing.process.BaseProcess, receive: Connection,
              child_stop: threading.Event, stop: threading.Event,
              progress: Progress | None) -> Detector:
        """The blob once it comes (passing progress on); on ``stop`` the child is asked,
        then made, to end."""
        while True:
            if stop.is_set():
                child_stop.set()
                raise ModelError("training stopped")
            if not receive.poll(POLL_S):
                if not child.is_alive() and not receive.poll(0):
                    raise ModelError(f"training process died (exit code {child.exitcode})")
                continue
            try:
                status, *payload = receive.recv()
            except EOFError as exc:
                raise ModelError(f"training process died (exit code {child.exitcode})") from exc
            if status == "progress":
                if progress is not None:
                    progress(*payload)
                continue
            if status != "ok":
                raise ModelError(f"training failed in the worker: {payload[0]}")
            return checkpoint_from_bytes(payload[0]).detector

    def _end(self, child: multiprocessing.process.BaseProcess) -> None:
        """Join the child within the grace period, else terminate it, else kill it."""
        child.join(self.grace_s)
        if child.is_alive():
            log.warning("event=trainer_terminated pid=%s grace_s=%.1f", child.pid,
                        self.grace_s)
            child.terminate()
            child.join(1.0)
        if child.is_alive():
            child.kill()
            child.join(1.0)
        with self._lock:
            self._child = None

    def close(self) -> None:
        """Nothing lingers between retrains; a child in flight ends with its caller's stop."""
        with self._lock:
            child = self._child
        if child is not None and child.is_alive():
            self._end(child)
