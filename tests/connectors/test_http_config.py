"""The `http` connector's settings, checked when the system is saved: a mistake is a form error, not a failed write."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from connectors.http.config import HttpConfig


def test_the_settings_of_the_demo_crm_parse_with_its_versioning():
    config = HttpConfig.parse(
        {"base_url": "http://crm.internal/", "timeout": 5, "version_field": "version", "expected_version_field": "v"}
    )
    assert config.base_url == "http://crm.internal"
    assert (config.version_field, config.expected_version_field) == ("version", "v")
    assert HttpConfig.parse({"base_url": "https://crm.internal"}).version_field == ""  # optional: no versioning


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, 'Set "base_url"'),
        ({"base_url": "ftp://crm"}, 'Set "base_url"'),
        ({"base_url": "http://crm", "colour": "red"}, "Unknown connector setting(s): colour"),
        ({"base_url": "http://crm", "timeout": 0}, '"timeout" must be a number of seconds'),
        ({"base_url": "http://crm", "timeout": True}, '"timeout" must be a number of seconds'),
        ({"base_url": "http://crm", "health_path": "health"}, '"health_path" must be a path'),
        ({"base_url": "http://crm", "version_field": "version"}, 'Set both "version_field"'),
        ({"base_url": "http://crm", "expected_version_field": "expected_version"}, 'Set both "version_field"'),
        ({"base_url": "http://crm", "version_field": 1, "expected_version_field": "v"}, 'Set both "version_field"'),
    ],
)
def test_a_wrong_setting_is_refused_with_what_to_set(raw, message):
    with pytest.raises(ValidationError) as refused:
        HttpConfig.parse(raw)
    assert message in str(refused.value)
