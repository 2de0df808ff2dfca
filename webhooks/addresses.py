"""Where a webhook may be sent: the control plane's allow-list (connectors/hosts.py), as for a system's address.

A receiver gets governance events, so its URL is held to the same list an operator sets in the environment
(GATEHOUSE_CONNECTOR_HOSTS: public hosts, plus private or loopback ones only when listed). Checked when a subscription
is saved and again before every attempt, so a row changed behind the admin's back, or a list narrowed since, sends
nothing: fail closed.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from connectors.config import http_url

INVALID = "Enter the receiver's http:// or https:// address."


def url_refusal(url: str) -> str | None:
    """None when a delivery may be POSTed to `url`; else why not, in words for the person configuring it."""
    try:
        http_url({"url": url}, "url", invalid=INVALID)
    except ValidationError as exc:
        return " ".join(exc.messages).replace('"url": ', "")
    return None
