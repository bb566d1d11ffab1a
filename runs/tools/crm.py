"""Tools on the built-in CRM-style store (`CrmRecord`)."""

from __future__ import annotations

from typing import Any, Literal

from django.db import IntegrityError, transaction
from pydantic import BaseModel, Field

from runs.models import CrmRecord
from runs.tools.base import Tool, ToolCall, ToolError

OBJECT_TYPE = r"^[a-z][a-z0-9_.-]*$"


class RecordRef(BaseModel):
    object_type: str = Field(min_length=1, max_length=60, pattern=OBJECT_TYPE)
    external_id: str = Field(min_length=1, max_length=200)


class RecordResult(BaseModel):
    object_type: str
    external_id: str
    data: dict[str, Any]
    created: bool
    writes: int


def _result(record: CrmRecord) -> RecordResult:
    # `created` is derived from the row, so a replayed key answers exactly
    # what the first call answered.
    return RecordResult(
        object_type=record.object_type,
        external_id=record.external_id,
        data=record.data,
        created=record.writes == 1,
        writes=record.writes,
    )


class CrmUpsert(Tool):
    """Creates or updates one record; `mode` merges `data` into the stored
    keys or replaces them all.

    Idempotent on the record: a call whose key equals the record's
    `last_idempotency_key` changes nothing and answers the same result.
    Only the last key is remembered, so a stale retry arriving after a
    later write would apply again; the gate's ledger answers retries of a
    finished call before they get here.
    """

    name = "crm.upsert"
    description = "Create or update a CRM record (merge or replace its data)."
    side_effect = "write_idempotent"

    class Args(RecordRef):
        data: dict[str, Any] = Field(default_factory=dict)
        mode: Literal["merge", "replace"] = "merge"

    Result = RecordResult

    def stub(self, args: Args) -> RecordResult:
        """The record as the upsert would leave it, read but not written."""
        record = CrmRecord.objects.filter(
            object_type=args.object_type, external_id=args.external_id
        ).first()
        base = record.data if record is not None and args.mode == "merge" else {}
        writes = record.writes if record is not None else 0
        return RecordResult(
            object_type=args.object_type,
            external_id=args.external_id,
            data={**base, **args.data},
            created=record is None,
            writes=writes + 1,
        )

    def run(self, args: Args, call: ToolCall) -> RecordResult:
        key = call.idempotency_key
        # Two tries: if a concurrent call creates the row between our lookup
        # and our insert, the unique constraint refuses ours and the second
        # try finds (and locks) theirs. Never check-then-insert alone.
        for _ in range(2):
            try:
                with transaction.atomic():
                    record = (
                        CrmRecord.objects.select_for_update()
                        .filter(object_type=args.object_type, external_id=args.external_id)
                        .first()
                    )
                    if record is None:
                        record = CrmRecord.objects.create(
                            object_type=args.object_type,
                            external_id=args.external_id,
                            data=args.data,
                            last_idempotency_key=key,
                            writes=1,
                        )
                    elif record.last_idempotency_key != key:
                        # The row is locked (FOR UPDATE; SQLite's IMMEDIATE
                        # transaction holds the write lock), so += is safe.
                        base = record.data if args.mode == "merge" else {}
                        record.data = {**base, **args.data}
                        record.last_idempotency_key = key
                        record.writes += 1
                        record.save(
                            update_fields=["data", "last_idempotency_key", "writes", "updated_at"]
                        )
                    return _result(record)
            except IntegrityError:
                continue
        raise ToolError(
            f"could not upsert {args.object_type}:{args.external_id} (concurrent writes)",
            retryable=True,
        )


class CrmGet(Tool):
    """Reads one record; `found` is false when there is none."""

    name = "crm.get"
    description = "Read a CRM record."

    Args = RecordRef

    class Result(BaseModel):
        found: bool
        object_type: str
        external_id: str
        data: dict[str, Any] = Field(default_factory=dict)
        writes: int = 0

    def run(self, args: RecordRef, call: ToolCall) -> Result:
        record = CrmRecord.objects.filter(
            object_type=args.object_type, external_id=args.external_id
        ).first()
        if record is None:
            return self.Result(
                found=False, object_type=args.object_type, external_id=args.external_id
            )
        return self.Result(
            found=True,
            object_type=record.object_type,
            external_id=record.external_id,
            data=record.data,
            writes=record.writes,
        )
