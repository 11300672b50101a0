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
