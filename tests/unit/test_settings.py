"""Settings come from STREAMAE_* variables; a wrong one stops start-up with a clear message."""

from __future__ import annotations

import pytest

from streamae.exceptions import SettingsError
from streamae.settings import Settings, env_name, load_settings


def test_nested_variables_and_lists_are_read(monkeypatch):
    monkeypatch.setenv("STREAMAE_KAFKA__INPUT_TOPICS", "a, b,c")
    monkeypatch.setenv("STREAMAE_MODEL__HIDDEN_SIZES", "[16, 4]")
    monkeypatch.setenv("STREAMAE_THRESHOLD__QUANTILE", "0.99")
    monkeypatch.setenv("STREAMAE_INPUT__IMAGE_CHANNELS", "3")
    settings = load_settings()
    assert settings.kafka.input_topics == ["a", "b", "c"]
    assert settings.model.hidden_sizes == [16, 4]
    assert settings.threshold.quantile == 0.99
    assert settings.input.image_channels == 3


def test_a_wrong_value_names_the_variable_the_value_and_what_is_allowed(monkeypatch):
    monkeypatch.setenv("STREAMAE_THRESHOLD__METHOD", "median")
    monkeypatch.setenv("STREAMAE_BATCH__MAX_SIZE", "0")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "STREAMAE_THRESHOLD__METHOD='median'" in message
    assert "'static', 'quantile', 'spot' or 'limit'" in message
    assert "STREAMAE_BATCH__MAX_SIZE='0'" in message
    assert "greater than or equal to 1" in message


def test_settings_that_do_not_go_together_are_named(monkeypatch):
    monkeypatch.setenv("STREAMAE_WINDOW__CENTRED_FEATURES", "Temperature, Thermocouple")
    assert load_settings(input={"kind": "window"}).window.centred_features == [
        "Temperature", "Thermocouple"]
    with pytest.raises(SettingsError, match="CENTRED_FEATURES=Temperature,Thermocouple: needs "
                       "STREAMAE_INPUT__KIND=window, not 'vector'"):
        load_settings()
    monkeypatch.setenv("STREAMAE_INPUT__KIND", "window")
    monkeypatch.setenv("STREAMAE_INPUT__FEATURES", "Temperature,Pressure")
    with pytest.raises(SettingsError, match=r"\['Thermocouple'\] not among STREAMAE_INPUT__FEAT"):
        load_settings()


def test_secrets_are_never_printed(monkeypatch):
    monkeypatch.setenv("STREAMAE_KAFKA__SASL_PASSWORD", "hunter2")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValueError):
        settings.threshold.value = 1.0  # type: ignore[misc]


def test_env_name_skips_list_indices():
    assert env_name(("kafka", "input_topics", 0)) == "STREAMAE_KAFKA__INPUT_TOPICS"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("STREAMAE_KAFKA__INPUT_TOPICS", "bad topic!", "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__INPUT_TOPICS", "a,b/c", "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__INPUT_TOPICS", ",", "at least one input topic"),
    ("STREAMAE_KAFKA__OUTPUT_TOPIC", "x" * 250, "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__OUTPUT_TOPIC", "..", "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__DEAD_LETTER_TOPIC", "", "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__MODEL_TOPIC", "m\u00f6dels", "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__SCORES_TOPIC", "scores topic", "not a legal Kafka topic name"),
    ("STREAMAE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:notaport", "is not host:port"),
    ("STREAMAE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1", "is not host:port"),
    ("STREAMAE_KAFKA__BOOTSTRAP_SERVERS", "a:9092,b:70000", "is not host:port"),
    ("STREAMAE_KAFKA__BOOTSTRAP_SERVERS", "a:9092,", "is not host:port"),
    ("STREAMAE_KAFKA__BOOTSTRAP_SERVERS", "a b:9092", "is not host:port"),
    ("STREAMAE_MODEL__HIDDEN_SIZES", "-3,0", "each >= 1"),
    ("STREAMAE_MODEL__HIDDEN_SIZES", "16,0", "each >= 1"),
    ("STREAMAE_MODEL__HIDDEN_SIZES", ",", "each >= 1"),
    ("STREAMAE_METRICS_HOST", "", "at least 1 character"),
    ("STREAMAE_KAFKA__OUTAGE_BUDGET_S", "0", "greater than 0"),
    ("STREAMAE_KAFKA__DEAD_LETTER_MAX_BYTES", "10", "greater than or equal to 1024"),
])
def test_each_invalid_value_is_refused_with_its_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert f"{name}=" in str(caught.value) and expected in str(caught.value)


def test_valid_names_and_addresses_are_kept(monkeypatch):
    monkeypatch.setenv("STREAMAE_KAFKA__BOOTSTRAP_SERVERS", "kafka-0.svc:9092, [::1]:9093")
    monkeypatch.setenv("STREAMAE_KAFKA__INPUT_TOPICS", "a.b_c-1," + "x" * 249)
    monkeypatch.setenv("STREAMAE_KAFKA__SCORES_TOPIC", "")
    monkeypatch.setenv("STREAMAE_METRICS_HOST", "127.0.0.1")
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "kafka-0.svc:9092,[::1]:9093"
    assert settings.kafka.input_topics == ["a.b_c-1", "x" * 249]
    assert settings.kafka.scores_topic is None and settings.metrics_host == "127.0.0.1"
    monkeypatch.delenv("STREAMAE_METRICS_HOST")
    assert Settings().metrics_host == "0.0.0.0"


@pytest.mark.parametrize(("name", "value"), [
    ("STREAMAE_KAFKA", '["hunter2"]'),
    ("STREAMAE_KAFKA", '{"sasl_password": ["hunter2"]}'),
    ("STREAMAE_KAFKA", '{"sasl_password": {"v": "hunter2"}}'),
    ("STREAMAE_KAFKA", '{"ssl_password": 7, "sasl_password": {"v": "hunter2"}}'),
    ("STREAMAE_KAFKA", "{not json hunter2"),
    ("STREAMAE_KAFKA", '{"sasl_password": "hunter2", "bootstrap_servers": ["hunter2"]}'),
])
def test_malformed_settings_never_echo_a_secret(monkeypatch, capsys, name, value):
    from streamae.cli import main

    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value) and "STREAMAE_KAFKA" in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert main(["run"]) == 2
    out = capsys.readouterr()
    assert "hunter2" not in out.out + out.err and "invalid configuration" in out.err


def test_a_wrong_value_that_holds_the_secret_is_not_shown(monkeypatch):
    monkeypatch.setenv("STREAMAE_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("STREAMAE_KAFKA__OUTPUT_TOPIC", "hunter2 !")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)
    assert "STREAMAE_KAFKA__OUTPUT_TOPIC=<not shown: holds a secret>" in str(caught.value)
