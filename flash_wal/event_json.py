"""Events as JSON objects: the format of ``flash-wal listen``, one object per line.

Row values become what JSON can hold without losing anything: numbers, strings,
booleans, null, arrays and objects. ``Decimal`` (exact), dates and times (ISO 8601),
intervals (ISO 8601 durations), UUIDs, ranges and every other type become strings;
``bytea`` becomes base64; a float that JSON cannot write (NaN, Infinity) becomes the
string PostgreSQL prints for it. A TOASTed value the server did not send is
:data:`UNCHANGED_TOAST_JSON`.
"""

import base64
import datetime
import json
import math
from typing import Any, Dict, Union

from psycopg2.extras import Range

from .events import DeleteEvent, Event, InsertEvent, MessageEvent, ReadEvent, TruncateEvent, UpdateEvent
from .sentinels import UNCHANGED_TOAST

__all__ = ["UNCHANGED_TOAST_JSON", "json_value", "event_as_dict", "event_to_json"]

#: The JSON of an unchanged TOASTed value (:data:`flash_wal.UNCHANGED_TOAST`), an
#: object so that it cannot pass for a value of the column's type.
UNCHANGED_TOAST_JSON: Dict[str, bool] = {"unchanged_toast": True}

_FLOAT_NAMES = {math.inf: "Infinity", -math.inf: "-Infinity"}
_MICROSECONDS = {"D": 86_400_000_000, "H": 3_600_000_000, "M": 60_000_000}


def json_value(value: Any) -> Any:
    """``value``, as events carry it, turned into something ``json.dumps`` writes."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else _FLOAT_NAMES[value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if value is UNCHANGED_TOAST:
        return dict(UNCHANGED_TOAST_JSON)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return _iso_duration(value)
    if isinstance(value, Range):
        return _range_text(value)
    return str(value)  # Decimal (exactly as the server wrote it), UUID, and anything else


def event_as_dict(event: Union[Event, MessageEvent]) -> Dict[str, Any]:
    """The JSON object of one event, as a dict of JSON-ready values.

    Keys: ``table``, ``op`` (``"INSERT"``, ``"UPDATE"``, ``"DELETE"`` or
    ``"TRUNCATE"``, or ``"READ"`` for a backfill's row), ``lsn``, ``commit_lsn``, ``xid``, ``commit_time``; then ``new``
    (INSERT, UPDATE, READ), ``old`` (UPDATE, possibly null; DELETE), or ``cascade`` and
    ``restart_identity`` (TRUNCATE). A message has ``op`` ``"MESSAGE"``, ``prefix``,
    ``content`` (base64), ``transactional``, ``lsn`` and ``xid``.
    """
    if isinstance(event, MessageEvent):
        return {
            "op": "MESSAGE", "prefix": event.prefix, "content": json_value(event.content),
            "transactional": event.transactional, "lsn": event.lsn, "xid": event.xid,
        }
    fields: Dict[str, Any] = {
        "table": event.table,
        "op": str(event.operation),
        "lsn": event.lsn,
        "commit_lsn": event.commit_lsn,
        "xid": event.xid,
        "commit_time": json_value(event.commit_time),
    }
    if isinstance(event, (UpdateEvent, DeleteEvent)):
        fields["old"] = json_value(event.old)
    if isinstance(event, (InsertEvent, UpdateEvent, ReadEvent)):
        fields["new"] = json_value(event.new)
    if isinstance(event, TruncateEvent):
        fields["cascade"] = event.cascade
        fields["restart_identity"] = event.restart_identity
    return fields


def event_to_json(event: Union[Event, MessageEvent]) -> str:
    """One event as one line of JSON (no newline in it; non-ASCII text kept as is)."""
    return json.dumps(event_as_dict(event), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _iso_duration(delta: datetime.timedelta) -> str:
    """``P1DT2H3M4.5S``; ``-PT30S`` for a negative interval; ``PT0S`` for none."""
    rest = abs(delta) // datetime.timedelta(microseconds=1)
    parts = {}
    for unit, size in _MICROSECONDS.items():
        parts[unit], rest = divmod(rest, size)
    seconds, micros = divmod(rest, 1_000_000)
    second_text = f"{seconds}.{micros:06d}".rstrip("0") if micros else str(seconds) if seconds else ""
    time_text = "".join(f"{parts[unit]}{unit}" for unit in "HM" if parts[unit])
    time_text += f"{second_text}S" if second_text else ""
    text = "P" + (f"{parts['D']}D" if parts["D"] else "") + (f"T{time_text}" if time_text else "")
    if text == "P":
        text = "PT0S"
    return ("-" if delta < datetime.timedelta(0) else "") + text


def _range_text(value: "Range[Any]") -> str:
    """A range as PostgreSQL writes it: ``[1,10)``, ``(,2025-01-01)``, ``empty``."""
    if value.isempty:
        return "empty"

    def bound(item: Any, infinite: bool) -> str:
        if infinite:
            return ""
        converted = json_value(item)
        return converted if isinstance(converted, str) else json.dumps(converted)

    return (("[" if value.lower_inc else "(") + bound(value.lower, value.lower_inf) + ","
            + bound(value.upper, value.upper_inf) + ("]" if value.upper_inc else ")"))
