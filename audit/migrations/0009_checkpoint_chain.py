"""Checkpoints become a chain: each names the checkpoint it was signed after, and its signature covers that link.

Existing rows are version 1 (signed alone) through the column's database default, and keep verifying as they were
signed. The defaults are the database's own so that a process of the previous release, still running during a rolling
deploy, can go on inserting its version 1 checkpoints. One successor per checkpoint: the chain cannot fork.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_refuse_truncate")]

    operations = [
        migrations.AddField(
            model_name="auditcheckpoint",
            name="version",
            field=models.PositiveSmallIntegerField(
                db_default=1, help_text="1: signed alone; 2: linked to the one before."
            ),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="previous_id",
            field=models.BigIntegerField(blank=True, help_text="The checkpoint this one was signed after.", null=True),
        ),
        migrations.AddField(
            model_name="auditcheckpoint",
            name="previous_signature",
            field=models.CharField(blank=True, db_default="", max_length=64),
        ),
        migrations.AddConstraint(
            model_name="auditcheckpoint",
            constraint=models.UniqueConstraint(fields=("previous_id",), name="audit_checkpoint_one_successor"),
        ),
    ]
