"""One frozen settings tree read from the environment (prefix ``STREAMAE_``, nesting ``__``).

Every section is a plain pydantic model so the pipeline passes sections down, never the
whole tree. ``load_settings`` turns a validation failure into one message per wrong
variable that names the variable, the value and what is allowed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from streamae.exceptions import SettingsError

ENV_PREFIX = "STREAMAE_"
NESTED_DELIMITER = "__"

CommaList = Annotated[list[str], NoDecode]
OptionalIntList = Annotated[list[int] | None, NoDecode]
SECRET_FIELDS = frozenset({"sasl_password", "ssl_password"})
_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")  # Kafka's rule (and not "." or "..")
_HOST_PORT = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})")


def check_topic(name: str) -> str:
    """A name Kafka accepts as a topic: [a-zA-Z0-9._-], 1 to 249 characters, not . or .."""
    if not _TOPIC.fullmatch(name) or name in {".", ".."}:
        raise ValueError(f"not a legal Kafka topic name ({len(name)} characters; allowed: "
                         "1-249 of a-z A-Z 0-9 . _ -)")
    return name


def check_bootstrap(value: str) -> str:
    """A comma-separated list of host:port with ports 1-65535."""
    servers = [part.strip() for part in value.split(",")]
    for server in servers:
        match = _HOST_PORT.fullmatch(server)
        if match is None or not 1 <= int(match.group(1)) <= 65535:
            raise ValueError(f"{server!r} is not host:port (port 1-65535)")
    return ",".join(servers)


def _split_csv(value: Any) -> Any:
    """Accept ``a,b,c`` and JSON lists alike, so operators can write either."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    input_topics: CommaList = ["streamae.input"]
    output_topic: str = "streamae.anomalies"
    dead_letter_topic: str = "streamae.dead-letters"
    scores_topic: str | None = None  # every score, not only anomalies, when set
    # "record": one record per scored message; "batch": one per input partition and turn,
    # columns of offsets, keys and scores (kafka-python spends ~50 us per record sent)
    scores_format: Literal["record", "batch"] = "record"
    latent_topic: str | None = None  # latent vectors (`streamae encode --topic`)
    model_topic: str = "streamae.models"  # compacted; trainer publishes, scorers load
    incidents_topic: str = "streamae.incidents"  # compacted, keyed by incident id
    incident_state_topic: str = "streamae.incidents.state"  # compacted; restart state
    drift_topic: str = "streamae.drift"  # drift events (streamae.drift/v1)
    group_id: str = "streamae"
    client_id: str = "streamae"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    session_timeout_ms: int = Field(45_000, ge=1_000)
    max_message_bytes: int = Field(1_048_576, ge=16)  # larger inputs are dead-lettered
    # The dead-letter topic is created able to hold inputs up to this size (its
    # max.message.bytes); a larger one is dead-lettered headers-only (size, reason, offset).
    dead_letter_max_bytes: int = Field(8 * 1_048_576, ge=1_024)
    # How long the daemon waits for an unreachable broker (acks, start-up) before it exits.
    outage_budget_s: float = Field(600.0, gt=0)
    # exactly_once: the outputs of a batch and its offsets commit in one transaction; read
    # the outputs with isolation_level=read_committed. Needs a transactional id that is
    # stable per replica (default: streamae-<group>-<host name>, a StatefulSet pod name).
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    transactional_id: str | None = Field(None, min_length=1, max_length=249)
    # The client library: kafka-python (default), or confluent-kafka (librdkafka, ~2-3x
    # faster; `pip install 'streamae[confluent]'`), same guarantees, exactly once included.
    client: Literal["kafka-python", "confluent"] = "kafka-python"

    _split_topics = field_validator("input_topics", mode="before")(_split_csv)

    @field_validator("input_topics")
    @classmethod
    def _legal_inputs(cls, topics: list[str]) -> list[str]:
        if not topics:
            raise ValueError("at least one input topic is needed")
        return [check_topic(topic) for topic in topics]

    @field_validator("output_topic", "dead_letter_topic", "model_topic")
    @classmethod
    def _legal_topic(cls, topic: str) -> str:
        return check_topic(topic)

    @field_validator("scores_topic", "latent_topic")
    @classmethod
    def _legal_optional_topic(cls, topic: str | None) -> str | None:
        return None if topic is None or topic == "" else check_topic(topic)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        return check_bootstrap(value)


class InputSettings(Section):
    kind: Literal["vector", "window", "image"] = "vector"
    features: CommaList = []  # named-feature order; empty = order of the first message
    dimension: int | None = Field(None, ge=1)  # fixed width; None = learnt at warm-up
    image_height: int = Field(28, ge=4)
    image_width: int = Field(28, ge=4)
    image_channels: Literal[1, 3] = 1
    image_resize: bool = True  # False: images of another size are dead-lettered

    _split_features = field_validator("features", mode="before")(_split_csv)

    @field_validator("image_channels", mode="before")
    @classmethod
    def _int_channels(cls, value: Any) -> Any:
        """The environment gives "3"; an int Literal only matches 3."""
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value


class WindowSettings(Section):
    length: int = Field(16, ge=2)
    stride: int = Field(1, ge=1)
    max_keys: int = Field(10_000, ge=1)  # least recently seen key is evicted past this
    late_policy: Literal["drop", "accept"] = "drop"
    # Each key's first readings fix its units (median, robust spread) and its windows are
    # scored in them, so keys measured in different units share one model; 0 turns it off.
    profile_readings: int = Field(64, ge=0)
    # Features judged by their shape in the window, not their level (each window's mean is
    # subtracted): slowly drifting channels such as temperatures. Named features only.
    centred_features: CommaList = []

    _split_centred = field_validator("centred_features", mode="before")(_split_csv)


class ModelSettings(Section):
    kind: Literal["dense", "denoising", "vae", "conv", "conv1d"] = "dense"
    # Layer widths (dense) or channels per stage (conv); None: the kind's default, (64, 32)
    # dense, (16, 32) conv: 64 channels at full resolution cost ~5x the time for no AUC.
    hidden_sizes: OptionalIntList = None
    latent_size: int | None = Field(None, ge=1)  # None: about sqrt(input width), always smaller
    epochs: int = Field(30, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    noise_std: float = Field(0.1, ge=0)  # denoising: gaussian corruption
    mask_probability: float = Field(0.1, ge=0, lt=1)  # denoising: masking corruption
    beta: float = Field(1.0, ge=0)  # vae: weight of the KL term
    variational: bool = False  # conv / conv1d: a variational latent (dense: use kind vae)
    # conv / conv1d: how stages halve the resolution, "stride" (strided convs) or "pool"
    # (conv + max-pool); None: the kind's default, stride for conv, pool for conv1d.
    downsample: Literal["pool", "stride"] | None = None
    validation_fraction: float = Field(0.3, gt=0, lt=1)  # also calibrates the threshold
    patience: int = Field(5, ge=1)  # early stop after this many epochs without progress
    # ... where progress is a validation loss at least this share below the last one
    min_improvement: float = Field(0.01, ge=0, lt=1)
    seed: int = 0
    # Windows: which features the model judges by shape rather than level. "auto" centres
    # a scalar stream and any feature whose level wanders in training (streamae/scaling.py).
    centring: Literal["auto", "none", "all"] = "auto"
    # Windows: two-valued columns (commands, modes) are context and each measured value is
    # judged against its mode's level (streamae/modes.py). False: every column is measured.
    operating_modes: bool = True
    # Drop training samples whose error is far outside the bulk and refit (up to 4 times):
    # for a warm-up known to hold anomalies. Off by default: it also drops rare normal
    # patterns (a command switch, a normal spike), which then alarm (docs/quality.md).
    trim_outliers: bool = False

    _split_hidden = field_validator("hidden_sizes", mode="before")(_split_csv)

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes is not None and (not sizes or min(sizes) < 1):
            raise ValueError("needs one or more layer sizes, each >= 1")
        return sizes


class BatchSettings(Section):
    # The largest batch: a backlog is polled and scored in batches this large (4,096
    # vectors at once cost about half as much each as 256); a quiet stream is scored as
    # it arrives, without waiting to fill a batch.
    max_size: int = Field(4096, ge=1)
    max_wait_ms: int = Field(100, ge=0)  # the longest wait for a record when idle


class ThresholdSettings(Section):
    # Scores are -log10 of a reading's tail probability among normal readings; the default
    # flags readings rarer than false_alarm_rate (score > 4 for 1e-4).
    method: Literal["false_alarm_rate", "static", "quantile", "spot", "limit"] = (
        "false_alarm_rate")
    false_alarm_rate: float = Field(1e-4, gt=0, lt=1)
    value: float = Field(3.0, gt=0)  # static threshold on the score
    quantile: float = Field(0.995, gt=0, lt=1)
    margin: float = Field(1.75, ge=1)  # limit: margin x the largest calibration score
    window: int = Field(10_000, ge=10)  # recent scores the rolling quantile covers
    min_samples: int = Field(100, ge=1)  # nothing is flagged before this many scores
    normalisation: Literal["z", "robust_z"] = "robust_z"  # per-feature z in explanations
    top_k: int = Field(3, ge=1)  # deviating features named in each event


class IncidentSettings(Section):
    """Anomalous readings of one key grouped into incidents (see streamae/incidents.py)."""

    enabled: bool = True
    open_flags: int = Field(2, ge=1)  # N: an incident opens when N of ...
    open_readings: int = Field(3, ge=1)  # ... the key's last M readings are flagged
    # A reading this far above the threshold (2: a hundred times rarer, scores being
    # -log10 tail probabilities) opens one at once and makes an incident `critical`.
    critical_margin: float = Field(2.0, gt=0)
    quiet_readings: int = Field(30, ge=1)  # Q: resolved after Q readings in a row unflagged
    stale_seconds: float = Field(900.0, gt=0)  # resolved when the key is silent this long
    # `updated` when the peak's margin over the threshold grows this many times over the
    # margin last published, and by at least update_margin (1: ten times rarer).
    update_factor: float = Field(10.0, ge=1)
    update_margin: float = Field(1.0, gt=0)
    # At most one `updated` per incident in this much event time (0: every change at once);
    # a change inside it is published at the key's next reading after it, or in `resolved`.
    update_interval_seconds: float = Field(30.0, ge=0)
    max_keys: int = Field(10_000, ge=1)  # keys whose recent flags are remembered (LRU)


class RetrainSettings(Section):
    enabled: bool = True
    every_windows: int = Field(5_000, ge=10)  # scored windows between retrains
    every_seconds: float = Field(3_600, gt=0)
    buffer_max_windows: int = Field(50_000, ge=10)
    buffer_max_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    # Only readings scored below this calibrated score enter the training buffer (2: inside
    # 99% of normal), and never above the threshold in force.
    gate_score: float = Field(2.0, gt=0)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    # A challenger must flag the reference set at >= the anchor model's rate - tolerance.
    tolerance: float = Field(0.05, ge=0, le=1)
    # ... and score those of its readings within score_ratio of the anchor's scores, for at
    # least a score_agreement share (sqrt 2: any two promoted versions agree within 2x).
    score_ratio: float = Field(1.41, ge=1)
    score_agreement: float = Field(0.9, ge=0, le=1)
    # Flagged windows scored this far above the threshold are confirmed anomalies (2: a
    # hundred times rarer than the threshold), kept across versions in the reference set.
    confirm_margin: float = Field(2.0, ge=0)
    reference_synthetic: int = Field(300, ge=0)  # synthetic anomalies in the reference set
    far_ratio: float = Field(3.0, ge=1)  # challenger FAR on recent normal <= ratio x target
    rollback_alert_ratio: float = Field(5.0, gt=1)  # explosion (or collapse) factor
    rollback_window: int = Field(1_000, ge=10)  # scores after a promotion judged for rollback
    min_windows: int = Field(200, ge=10)  # a retrain needs at least this many buffered
    flagged_windows: int = Field(256, ge=0)  # confirmed anomalies kept for the reference set
    calibration_windows: int = Field(5_000, ge=100)  # recent normal windows for the threshold
    # Drift: retrain on the new regime once it is stable (bypassing the gate, re-anchoring
    # the reference); false: keep alarming and say so.
    follow_drift: bool = False
    regime_windows: int = Field(2_000, ge=100)  # a regime is stable over 2 x this many
    regime_stable: float = Field(0.25, gt=0)  # max mean shift (in stds) between the halves
    model_max_bytes: int = Field(64 * 1024 * 1024, ge=1_048_576)  # model topic message limit
    # Where training runs: "process" (a child process per retrain, with its own GIL and
    # torch threads, so CPU scoring keeps its pace), "thread" (in process, on its own CUDA
    # stream on a GPU); "auto" picks thread on CUDA, process on CPU.
    executor: Literal["auto", "thread", "process"] = "auto"
    start_method: Literal["auto", "fork", "spawn"] = "auto"  # auto: fork where available
    stop_grace_s: float = Field(2.0, ge=0)  # a training child still alive then is killed
    train_threads: int = Field(1, ge=1, le=256)  # torch threads of the training process


class DriftSettings(Section):
    """Page-Hinkley on the share of readings scored above ``level`` (streamae/drift.py)."""

    enabled: bool = True
    level: float = Field(2.0, gt=0)  # readings scored above this count as exceedances
    delta: float = Field(0.005, ge=0)  # tolerated rise of the exceedance share
    threshold: float = Field(500.0, gt=0)  # excess exceedances (in readings) that signal drift
    min_instances: int = Field(1_000, ge=1)  # readings before a drift can be signalled


class CheckpointSettings(Section):
    directory: Path = Path("checkpoints")
    keep: int = Field(5, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter=NESTED_DELIMITER, frozen=True, extra="ignore"
    )

    role: Literal["all", "trainer", "scorer"] = "all"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Samples gathered to train the first model. 30% of them calibrate the score: with 1,000
    # the false-alarm rate at 1e-4 swings ~10x between training seeds, with 5,000 ~3x
    # (benchmarks/quality/stability.py). Lower it for slow streams, knowing that.
    warmup_size: int = Field(5_000, ge=10)
    metrics_port: int = Field(9100, ge=0, le=65535)  # 0 disables the HTTP server
    metrics_host: str = Field("0.0.0.0", min_length=1)  # bind address of /metrics, probes
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "summary": one INFO line every 10 s with the anomalies since (each at DEBUG);
    # "each": one INFO line per anomaly (the quickstart's demo), costly under load.
    anomaly_log: Literal["summary", "each"] = "summary"
    # Compute threads: numpy's BLAS (CPU scoring) and torch's intra-op threads (training,
    # images). 1 keeps small models fast and leaves a core to the background trainer;
    # raise it for large conv models on a many-core node.
    torch_threads: int = Field(1, ge=1, le=256)
    kafka: KafkaSettings = KafkaSettings()
    input: InputSettings = InputSettings()
    window: WindowSettings = WindowSettings()
    model: ModelSettings = ModelSettings()
    batch: BatchSettings = BatchSettings()
    threshold: ThresholdSettings = ThresholdSettings()
    incident: IncidentSettings = IncidentSettings()
    retrain: RetrainSettings = RetrainSettings()
    drift: DriftSettings = DriftSettings()
    checkpoints: CheckpointSettings = CheckpointSettings()


def env_name(location: tuple[str | int, ...]) -> str:
    """The environment variable a validation error location refers to."""
    parts = [str(part) for part in location if not isinstance(part, int)]
    return ENV_PREFIX + NESTED_DELIMITER.join(parts).upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; raise SettingsError naming each wrong variable. A value is
    echoed only when it is a plain scalar of a field that is not secret, and never when it
    holds a secret's text."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = [f"{env_name(err['loc'])}={shown(err)}: {err['msg']}" for err in exc.errors()]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    except SourceError as exc:  # a section given as JSON that does not parse
        field = re.search(r'field "([^"]+)"', str(exc))
        name = env_name((field.group(1),)) if field else ENV_PREFIX + "*"
        raise SettingsError(f"invalid configuration:\n  {name}: not valid JSON "
                            "(value not shown)") from None
    lines = conflicts(settings)
    if lines:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines))
    return settings


def shown(error: Any) -> str:
    """How a wrong value appears in a message (see ``load_settings``)."""
    value = error.get("input")
    secret = any(str(part) in SECRET_FIELDS for part in error.get("loc", ()))
    if secret or not isinstance(value, str | int | float | bool | None):
        return f"<{type(value).__name__}, not shown>"
    text = repr(value)
    secrets = [os.environ.get(f"{ENV_PREFIX}KAFKA{NESTED_DELIMITER}{name.upper()}")
               for name in SECRET_FIELDS]
    if any(secret_text and secret_text in text for secret_text in secrets):
        return "<not shown: holds a secret>"
    return text


def conflicts(settings: Settings) -> list[str]:
    """Settings that are each valid but do not go together, one line per problem."""
    lines = []
    centred = settings.window.centred_features
    name = ENV_PREFIX + "WINDOW__CENTRED_FEATURES"
    if centred and settings.input.kind != "window":
        lines.append(f"{name}={','.join(centred)}: needs {ENV_PREFIX}INPUT__KIND=window, "
                     f"not {settings.input.kind!r}")
    incident = settings.incident
    if incident.open_flags > incident.open_readings:
        lines.append(f"{ENV_PREFIX}INCIDENT__OPEN_FLAGS={incident.open_flags}: more than "
                     f"{ENV_PREFIX}INCIDENT__OPEN_READINGS={incident.open_readings}")
    unknown = [f for f in centred if settings.input.features and f not in settings.input.features]
    if unknown:
        lines.append(f"{name}: {unknown} not among {ENV_PREFIX}INPUT__FEATURES")
    return lines
