"""Producing records kafka-python refuses to write but other clients may (test helpers).

Kafka's record format allows a null header value and any bytes as a header key; the Java
client writes the first, a broken or hostile client the second. kafka-python checks
headers are ``(str, bytes)`` pairs and sizes them with ``len(value)``, so these shims get
such records onto a real broker for the daemon to meet.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator

import kafka.producer.producer_batch as producer_batch


class NullValue(tuple):
    """A (key, None) header that passes kafka-python's (str, bytes) check."""

    def __new__(cls, key: str) -> NullValue:
        return super().__new__(cls, (key, None))

    def __getitem__(self, index):  # the check reads item[1]; the writer iterates
        return b"" if index == 1 else tuple.__getitem__(self, index)


class RawKey(str):
    """A header key that kafka-python writes as the given bytes (not UTF-8, say)."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawKey:
        key = super().__new__(cls, raw.decode("latin-1"))
        key.raw = raw
        return key

    def encode(self, *_args: object, **_kwargs: object) -> bytes:
        return self.raw


@contextlib.contextmanager
def null_header_values() -> Iterator[None]:
    """Let the producer size a batch holding NullValue headers (len(None) counts as 0)."""
    producer_batch.len = lambda item: 0 if item is None else builtins.len(item)
    try:
        yield
    finally:
        del producer_batch.len
