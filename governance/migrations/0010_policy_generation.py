"""The policy generation row and the triggers that move it (governance/policy_triggers.py, policy_cache.py)."""

from django.db import migrations, models

from governance.policy_triggers import Watched, watch


def first_value(apps, schema_editor) -> None:
    apps.get_model("governance", "PolicyGeneration").objects.get_or_create(pk=1, defaults={"value": "initial"})


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("governance", "0009_band_review_before_by_default"),
    ]

    operations = [
        migrations.CreateModel(
            name="PolicyGeneration",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("value", models.CharField(max_length=32)),
            ],
            options={"verbose_name": "policy generation"},
        ),
        migrations.RunPython(first_value, migrations.RunPython.noop),
        watch(
            Watched("governance_agent"),
            Watched("governance_agenttoken", ignore=("last_used_at",)),
            Watched("governance_globalswitch"),
            Watched("governance_system"),
            Watched("governance_resource"),
            Watched("governance_actiontype"),
            Watched("governance_scopegrant"),
            Watched("governance_thresholdrule"),
            Watched("governance_thresholdband"),
            Watched("governance_agentbudget"),
            # A band's approver and groups are read through the cached band: who they are, whether they may act.
            Watched("auth_user", ignore=("last_login",)),
            Watched("auth_group"),
            Watched("auth_user_groups"),
        ),
    ]
