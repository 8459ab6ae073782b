"""The lifecycle's settings: read once, a malformed value stops the process with one
line naming the variable."""

from __future__ import annotations

import pytest

from config.settings import SettingsError, load_settings


def test_defaults_keep_everything() -> None:
    life = load_settings({}).lifecycle
    assert (life.delete_from_twilio, life.retention_days, life.call_retention_days) == (
        False,
        None,
        None,
    )


def test_call_retention_follows_retention_unless_set() -> None:
    life = load_settings({"RETENTION_DAYS": "30", "DELETE_FROM_TWILIO": "true"}).lifecycle
    assert (life.delete_from_twilio, life.retention_days, life.call_retention_days) == (
        True,
        30,
        30,
    )
    longer = load_settings({"RETENTION_DAYS": "30", "CALL_RETENTION_DAYS": "400"}).lifecycle
    assert longer.call_retention_days == 400
    calls_only = load_settings({"CALL_RETENTION_DAYS": "90"}).lifecycle
    assert (calls_only.retention_days, calls_only.call_retention_days) == (None, 90)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RETENTION_DAYS": "a month"}, "RETENTION_DAYS must be an integer, got 'a month'"),
        ({"RETENTION_DAYS": "0"}, "RETENTION_DAYS must be at least 1, got 0"),
        ({"DELETE_FROM_TWILIO": "maybe"}, "DELETE_FROM_TWILIO must be true or false"),
        (
            {"RETENTION_DAYS": "30", "CALL_RETENTION_DAYS": "7"},
            "CALL_RETENTION_DAYS (7) must be at least RETENTION_DAYS (30)",
        ),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(message)
