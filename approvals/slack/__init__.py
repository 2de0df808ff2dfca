"""Approvals from Slack: a message per proposal that waits for a person, with Approve and Reject buttons, updated with
the outcome whichever door decided it.

- client.py: Slack's Web API through the official SDK, at GATEHOUSE_SLACK_API_URL; its errors sorted into "try
  again" and "refused for good", with Slack's error code only (never the token, never Slack's whole answer).
- blocks.py: what the message says (Block Kit), from the proposal as it is when the message is posted or updated.
- messages.py: posting (one message per channel or per person, remembered in SlackMessage, so a retry never posts
  twice), updating, who a Slack user is in Gatehouse (by confirmed e-mail), and the refusals the Slack door audits.

The door itself (the interactions endpoint that verifies Slack's signature and calls approvals.decisions) is
console/slack.py. All of it is off unless GATEHOUSE_SLACK_BOT_TOKEN and GATEHOUSE_SLACK_SIGNING_SECRET are set.
"""

from __future__ import annotations

from django.conf import settings


def slack_enabled() -> bool:
    return bool(settings.GATEHOUSE_SLACK_BOT_TOKEN and settings.GATEHOUSE_SLACK_SIGNING_SECRET)
