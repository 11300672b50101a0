"""One frozen settings tree read from the environment (prefix ``STREAMAE_``, nesting ``__``).

Every section is a plain pydantic model so the pipeline passes sections down, never the
whole tree. ``load_settings`` turns a validation failure into one message per wrong
variable that names the variable, the value and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamae.exceptions import SettingsError

ENV_PREFIX = "STREAMAE_"
NESTED_DELIMITER = "__"

CommaList = Annotated[list[str], NoDecode]
IntList = Annotated[list[int], NoDecode]


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

    _split_topics = field_validator("input_topics", mode="before")(_split_csv)


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
    # Features judged by their shape in the window, not their level (each window's mean is
    # subtracted): slowly drifting channels such as temperatures. Named features only.
    centred_features: CommaList = []

    _split_centred = field_validator("centred_features", mode="before")(_split_csv)


class ModelSettings(Section):
    kind: Literal["dense", "denoising", "vae", "conv", "conv1d"] = "dense"
    hidden_sizes: IntList = [64, 32]
    latent_size: int | None = Field(None, ge=1)  # None: about sqrt(input width), always smaller
    epochs: int = Field(30, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    noise_std: float = Field(0.1, ge=0)  # denoising: gaussian corruption
    mask_probability: float = Field(0.1, ge=0, lt=1)  # denoising: masking corruption
    beta: float = Field(1.0, ge=0)  # vae: weight of the KL term
    variational: bool = False  # conv / conv1d: a variational latent (dense: use kind vae)
    validation_fraction: float = Field(0.3, gt=0, lt=1)  # also calibrates the threshold
    patience: int = Field(5, ge=1)  # early stop after this many epochs without progress
    seed: int = 0
    # Windows: which features the model judges by shape rather than level. "auto" centres
    # a scalar stream and any feature whose level wanders in training (streamae/scaling.py).
    centring: Literal["auto", "none", "all"] = "auto"

    _split_hidden = field_validator("hidden_sizes", mode="before")(_split_csv)


class BatchSettings(Section):
    max_size: int = Field(256, ge=1)
    max_wait_ms: int = Field(100, ge=0)


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
    # A reading this many times the threshold opens one at once (a lone spike) and makes
    # an incident `critical` rather than `warning`.
    critical_ratio: float = Field(2.0, gt=1)
    quiet_readings: int = Field(30, ge=1)  # Q: resolved after Q readings in a row unflagged
    stale_seconds: float = Field(900.0, gt=0)  # resolved when the key is silent this long
    update_ratio: float = Field(10.0, gt=1)  # `updated` when the peak rises this many times
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
    warmup_size: int = Field(1_000, ge=10)  # messages gathered to train the first model
    metrics_port: int = Field(9100, ge=0, le=65535)  # 0 disables the HTTP server
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # torch intra-op threads. 1 keeps small models fast and leaves a core to the
    # background trainer; raise it for large conv models on a many-core node.
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
    """Read the environment; raise SettingsError naming each wrong variable."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"{env_name(err['loc'])}={err.get('input')!r}: {err['msg']}" for err in exc.errors()
        ]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
    lines = conflicts(settings)
    if lines:
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines))
    return settings


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
