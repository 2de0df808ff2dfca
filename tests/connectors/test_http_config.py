"""The `http` connector's settings, checked when the system is saved: a mistake is a form error, not a failed write."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from connectors.http.config import HttpConfig


def test_the_settings_of_the_demo_crm_parse_with_its_versioning():
    config = HttpConfig.parse(
        {"base_url": "http://crm.example.com/", "timeout": 5, "version_field": "version", "expected_version_field": "v"}
    )
    assert config.base_url == "http://crm.example.com"
    assert (config.version_field, config.expected_version_field) == ("version", "v")
    assert HttpConfig.parse({"base_url": "https://crm.example.com"}).version_field == ""  # optional: no versioning


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, 'Set "base_url"'),
        ({"base_url": "ftp://crm"}, 'Set "base_url"'),
        ({"base_url": "http://crm.example.com", "colour": "red"}, "Unknown connector setting(s): colour"),
        ({"base_url": "http://crm.example.com", "timeout": 0}, '"timeout" must be a number of seconds'),
        ({"base_url": "http://crm.example.com", "timeout": True}, '"timeout" must be a number of seconds'),
        ({"base_url": "http://crm.example.com", "health_path": "health"}, '"health_path" must be a path'),
        ({"base_url": "http://crm.example.com", "version_field": "version"}, 'Set both "version_field"'),
        (
            {"base_url": "http://crm.example.com", "expected_version_field": "expected_version"},
            'Set both "version_field"',
        ),
        (
            {"base_url": "http://crm.example.com", "version_field": 1, "expected_version_field": "v"},
            'Set both "version_field"',
        ),
    ],
)
def test_a_wrong_setting_is_refused_with_what_to_set(raw, message):
    with pytest.raises(ValidationError) as refused:
        HttpConfig.parse(raw)
    assert message in str(refused.value)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kind", "raw", "message"),
    [
        ("http", {"base_url": "ftp://crm"}, 'Set "base_url"'),
        ("mcp", {"transport": "carrier-pigeon"}, "transport"),
        ("legacy_batch", {"colour": "blue"}, "Unknown connector setting(s): colour"),
    ],
)
def test_settings_saved_without_validation_fail_at_use_as_permanent_for_every_kind(kind, raw, message):
    """A row saved without full_clean(): no call could succeed, so the execution fails at once instead of retrying."""
    from connectors.base import PermanentError
    from connectors.registry import connector_for
    from tests.factories import SystemFactory

    system = SystemFactory(connector_kind=kind, connector_config=raw)
    with pytest.raises(PermanentError, match="connector settings: ") as refused:
        connector_for(system)
    assert message in str(refused.value)
