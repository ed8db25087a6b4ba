"""StatusChange.actor: who or what made the change (was only inside the reason text)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("registry", "0009_merge_index_and_pick"),
    ]

    operations = [
        migrations.AddField(
            model_name="statuschange",
            name="actor",
            field=models.CharField(
                blank=True, default="", max_length=200,
                help_text="Who or what made the change: apikey:<name>, a username, or the health job "
                          "(health-sweep, health-ttl, health-deregister).",
            ),
        ),
    ]
