"""Every error streamae raises on purpose, in one tree.

    StreamaeError
    ├── SettingsError        configuration is wrong; the daemon refuses to start
    ├── DecodeError          one input message is bad; it goes to the dead-letter topic
    ├── ModelError           a model cannot be built, trained or loaded
    │   └── CheckpointError  a checkpoint is missing, corrupt or of another shape
    │       └── ModelRejected  a loadable checkpoint that must not go live (``reason``)
    └── InfrastructureError  the broker or the device failed; the process stops and
        │                    Kubernetes restarts it
        └── AuthenticationError  the broker refused our credentials: never retried

Bad messages never stop the daemon; infrastructure errors always do. Third-party errors
are wrapped with ``raise X(...) from exc`` so the cause stays visible.
"""


class StreamaeError(Exception):
    """Base of every error raised on purpose by streamae."""


class SettingsError(StreamaeError):
    """The configuration is invalid; the message names each variable and what it allows."""


class DecodeError(StreamaeError):
    """One input message cannot be turned into an array.

    ``reason`` is a short, bounded label (used as a metric label and dead-letter header);
    the message text carries the detail.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ModelError(StreamaeError):
    """A model cannot be built, trained or used."""


class CheckpointError(ModelError):
    """A checkpoint is missing, corrupt or does not fit the model it is loaded into."""


class InfrastructureError(StreamaeError):
    """The broker or the device failed in a way the daemon cannot recover from."""


class ModelRejected(CheckpointError):
    """A checkpoint that must not replace the live model; ``reason`` is a bounded label
    (the ``reason`` of ``streamae_models_rejected_total``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class AuthenticationError(InfrastructureError):
    """The broker refused the credentials; the message names mechanism, user and bootstrap
    servers, never the password."""
