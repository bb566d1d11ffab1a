from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0010_move_integrations_models'),
    ]

    # VendorCall belongs to the demo app now (demo.0001 takes it over where
    # the demo is installed). State only: the table stays, since the demo
    # may be installed later on the same database.
    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
        migrations.DeleteModel(
            name='VendorCall',
        ),
    ]),
    ]
