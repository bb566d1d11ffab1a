from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0009_console_read_indexes'),
        ('integrations', '0001_initial'),
    ]

    # The models moved to `integrations` with their tables: state only.
    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
        migrations.DeleteModel(
            name='IdempotencyRecord',
        ),
        migrations.RemoveField(
            model_name='webhooksource',
            name='workflow',
        ),
        migrations.DeleteModel(
            name='WebhookDelivery',
        ),
        migrations.DeleteModel(
            name='WebhookSource',
        ),
    ]),
    ]
