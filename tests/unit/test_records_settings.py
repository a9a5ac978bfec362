"""The record store's settings, checked at start with a clear line for each bad value."""

from __future__ import annotations

import pytest

from signaling.records.database import database_url
from signaling.settings import SettingsError
from tests.conftest import make_settings


@pytest.mark.parametrize(("overrides", "message"), [
    ({"records_url": "mysql://jisr@db/jisr"}, "JISR_RECORDS_URL: must be sqlite:///PATH or "),
    ({"records_url": "sqlite://"}, "JISR_RECORDS_URL: sqlite:///PATH needs a file"),
    ({"records_url": "not a url"}, "JISR_RECORDS_URL: must be sqlite:///PATH"),
    ({"records_retention_days": 0}, "JISR_RECORDS_RETENTION_DAYS:"),
    ({"attachment_retention_days": -1}, "JISR_ATTACHMENT_RETENTION_DAYS:"),
    ({"clock_offset_s": 4000 * 86400}, "JISR_CLOCK_OFFSET_S:"),
    ({"fhir_push_url": "ftp://ehr/fhir"}, "JISR_FHIR_PUSH_URL: must be the http:// or https://"),
    ({"fhir_push_token_file": "/nonexistent/token"}, "JISR_FHIR_PUSH_TOKEN_FILE: cannot read"),
])  # fmt: skip
def test_bad_record_settings_are_refused_by_name(overrides, message) -> None:
    with pytest.raises(SettingsError) as refused:
        make_settings(**overrides)
    assert message in str(refused.value)


def test_the_record_store_defaults_to_a_file_under_the_data_folder(tmp_path) -> None:
    settings = make_settings(data_dir=tmp_path / "data")
    assert settings.records_database() == f"sqlite:///{tmp_path / 'data' / 'records.db'}"
    assert settings.records_retention_days == 3650  # ten years


def test_urls_get_the_async_drivers() -> None:
    assert database_url("sqlite:////var/lib/jisr/records.db") == (
        "sqlite+aiosqlite:////var/lib/jisr/records.db")
    assert database_url("postgresql://jisr@db:5432/jisr") == (
        "postgresql+asyncpg://jisr@db:5432/jisr")
