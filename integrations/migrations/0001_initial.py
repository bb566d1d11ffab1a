import django.db.models.deletion
from django.db import migrations, models


MOVED = ["idempotencyrecord", "webhooksource", "webhookdelivery"]


def _relabel(apps, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label=old, model__in=MOVED).update(app_label=new)


def move_content_types(apps, schema_editor):
    _relabel(apps, "runs", "integrations")


def unmove_content_types(apps, schema_editor):
    _relabel(apps, "integrations", "runs")


class Migration(migrations.Migration):

    initial = True

    # The models moved here from `runs`: their tables (named by db_table)
    # stay as they are, only Django's state moves. Content types (and so
    # the permissions granted on them) follow the models.
    dependencies = [
        ('runs', '0009_console_read_indexes'),
        ('policies', '0008_console_api_permissions'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.RunPython(move_content_types, unmove_content_types),
        migrations.SeparateDatabaseAndState(state_operations=[
        migrations.CreateModel(
            name='IdempotencyRecord',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('owner', models.CharField(help_text="Whose key space: the API key's prefix.", max_length=100)),
                ('key', models.CharField(max_length=255)),
                ('method', models.CharField(max_length=10)),
                ('path', models.CharField(max_length=300)),
                ('request_hash', models.CharField(max_length=64)),
                ('in_progress', models.BooleanField(default=True)),
                ('status_code', models.PositiveSmallIntegerField(blank=True, null=True)),
                ('response_headers', models.JSONField(blank=True, default=dict)),
                ('response_body', models.BinaryField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('locked_until', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'db_table': 'runs_idempotencyrecord',
                'indexes': [models.Index(fields=['created_at'], name='idempotency_created')],
                'constraints': [models.UniqueConstraint(fields=('owner', 'key'), name='idempotency_owner_key_unique')],
            },
        ),
        migrations.CreateModel(
            name='WebhookSource',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('slug', models.SlugField(max_length=100, unique=True)),
                ('name', models.CharField(blank=True, max_length=200)),
                ('secret', models.CharField(help_text='"whsec_" followed by base64; shared with the sender.', max_length=200)),
                ('input_path', models.CharField(blank=True, help_text='Dotted path of the run input inside the payload ("" = the whole payload).', max_length=200)),
                ('enabled', models.BooleanField(default=True)),
                ('tolerance_s', models.PositiveIntegerField(default=300, help_text="How far a delivery's timestamp may be from now.")),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('workflow', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='webhook_sources', to='runs.workflow')),
            ],
            options={
                'db_table': 'runs_webhooksource',
                'ordering': ['slug'],
            },
        ),
        migrations.CreateModel(
            name='WebhookDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('webhook_id', models.CharField(max_length=255)),
                ('received_at', models.DateTimeField(auto_now_add=True)),
                ('payload', models.JSONField(default=dict)),
                ('repeats', models.PositiveIntegerField(default=0, help_text='Duplicate deliveries seen.')),
                ('run', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to='runs.run')),
                ('source', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='integrations.webhooksource')),
            ],
            options={
                'verbose_name_plural': 'webhook deliveries',
                'db_table': 'runs_webhookdelivery',
                'ordering': ['-id'],
                'constraints': [models.UniqueConstraint(fields=('source', 'webhook_id'), name='webhook_delivery_unique')],
            },
        ),
    ]),
    ]
