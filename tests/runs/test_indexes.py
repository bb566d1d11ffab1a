"""The run and step tables carry no index that a wider one already covers
(migration runs 0031), and index a run's links to other runs only where it
has one (0032): every step's insert and every run's claim and end write
each index of their table, so an index that serves nothing is paid at
every step."""

from __future__ import annotations

import re

import pytest
from django.db import connection

# An index on the column alone: no other column, no INCLUDE, no WHERE.
ALONE = r"\(\s*\"?{column}\"?\s*\)\s*$"


def _index_definitions(table: str) -> list[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table])
        else:
            cursor.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s"
                " AND sql IS NOT NULL",
                [table],
            )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "column", "wider"),
    [
        ("runs_steprun", "run_id", "steprun_attempt_unique"),
        ("runs_run", "workflow_id", "run_workflow_created"),
    ],
)
def test_no_foreign_key_index_repeats_a_wider_one(table, column, wider):
    definitions = _index_definitions(table)
    alone = [d for d in definitions if re.search(ALONE.format(column=column), d)]
    assert alone == [], alone
    # What serves the lookups instead, led by the same column.
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    assert constraints[wider]["columns"][0] == column


@pytest.mark.django_db
@pytest.mark.parametrize("column", ["replay_of_id", "tools_from_id", "shadow_of_id"])
def test_a_runs_links_to_other_runs_are_indexed_only_where_there_is_one(column):
    """An ordinary run names no other run: its insert, claim and end write
    no entry in these indexes (runs 0032)."""
    on_column = [d for d in _index_definitions("runs_run") if f"({column})" in d.replace('"', "")]
    assert len(on_column) == 1, on_column
    assert re.search(rf"WHERE\s*\(?\s*\"?{column}\"?\s+IS NOT NULL", on_column[0]), on_column[0]
