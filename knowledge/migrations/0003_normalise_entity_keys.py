"""Spell the keys of existing entities the way lookups now spell them.

Entities written before keys were normalised may be filed under another
spelling (`Acme.com`, `https://acme.com/`) that a lookup no longer finds.
Each is re-keyed to its normal form unless an entity already holds that key:
then both stay as they are and the migration names them, to be merged by a
person (their events are records; nothing here rewrites them).
"""

from django.db import migrations


def normalise(apps, schema_editor):
    from knowledge.keys import normalise as normal_form

    Entity = apps.get_model("knowledge", "Entity")
    for entity in Entity.objects.all().iterator():
        key = normal_form(entity.type, entity.key)
        if key is None or key.value == entity.key:
            continue
        holder = Entity.objects.filter(type=entity.type, key=key.value).first()
        if holder is None:
            Entity.objects.filter(pk=entity.pk).update(key=key.value)
        else:
            print(
                f"  knowledge: entity #{entity.pk} {entity.type}:{entity.key!r} spells the key"
                f" of entity #{holder.pk} ({key.value!r}); merge them by hand"
            )


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0002_entity_alias")]
    operations = [migrations.RunPython(normalise, migrations.RunPython.noop)]
