from django.db import migrations, models


def _relabel(apps, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    ContentType.objects.filter(app_label=old, model="vendorcall").update(app_label=new)


def move_content_type(apps, schema_editor):
    _relabel(apps, "runs", "demo")


def unmove_content_type(apps, schema_editor):
    _relabel(apps, "demo", "runs")


class Migration(migrations.Migration):

    initial = True

    # VendorCall moved here from `runs`; its table (named by db_table) was
    # made by runs.0005 and stays as it is: only Django's state moves, and
    # the content type (with its permissions) follows the model.
    dependencies = [
        ('runs', '0011_vendorcall_to_demo'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.RunPython(move_content_type, unmove_content_type),
        migrations.SeparateDatabaseAndState(state_operations=[
        migrations.CreateModel(
            name='VendorCall',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('vendor', models.CharField(max_length=60)),
                ('operation', models.CharField(max_length=60)),
                ('subject', models.CharField(blank=True, max_length=300)),
                ('idempotency_key', models.CharField(blank=True, max_length=200, null=True)),
                ('credits', models.PositiveIntegerField(default=0)),
                ('request', models.JSONField(default=dict)),
                ('response', models.JSONField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'db_table': 'runs_vendorcall',
                'ordering': ['-id'],
                'indexes': [models.Index(fields=['vendor', 'operation'], name='vendorcall_vendor_op')],
                'constraints': [models.UniqueConstraint(condition=models.Q(('idempotency_key__isnull', False)), fields=('vendor', 'idempotency_key'), name='vendor_call_key_unique')],
            },
        ),
    ]),
    ]
