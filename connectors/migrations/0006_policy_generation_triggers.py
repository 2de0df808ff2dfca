"""The vaulted credentials are part of what an agent call is checked against: their changes move the policy
generation too (governance/policy_triggers.py)."""

from django.db import migrations

from governance.policy_triggers import Watched, watch


class Migration(migrations.Migration):
    dependencies = [
        ("connectors", "0005_agent_credential"),
        ("governance", "0010_policy_generation"),
    ]

    operations = [watch(Watched("connectors_credential"), Watched("connectors_agentcredential"))]
