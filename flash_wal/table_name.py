"""Schema-qualified table names, parsed the way PostgreSQL reads identifiers."""

import re
from typing import List, NamedTuple, Tuple

from .errors import ConfigurationError

__all__ = ["TableName", "parse_table_name"]

_UNQUOTED = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_MAX_IDENTIFIER_BYTES = 63


class TableName(NamedTuple):
    """A schema-qualified table name, with identifiers as PostgreSQL stores them.

    A named tuple because the replication thread looks one up for every change, and
    tuples hash and compare in C.
    """

    schema: str
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_table_name(text: str) -> TableName:
    """Parse ``posts``, ``stats.name``, ``"Stats"."Name"`` or ``public."posts"``.

    Unquoted parts are folded to lower case and quoted parts kept exactly, as
    PostgreSQL does; a name without a schema means ``public``.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"table must be a string like 'public.posts', not {text!r}")
    parts: List[str] = []
    pos, end = 0, len(text)
    while True:
        if pos < end and text[pos] == '"':
            part, pos = _read_quoted(text, pos)
        else:
            match = _UNQUOTED.match(text, pos)
            if not match:
                raise _bad_table(text, "expected an identifier at position %d" % pos)
            part, pos = match.group().lower(), match.end()
        if len(part.encode("utf-8")) > _MAX_IDENTIFIER_BYTES:
            raise _bad_table(text, f"{part!r} is longer than {_MAX_IDENTIFIER_BYTES} bytes")
        parts.append(part)
        if pos == end:
            break
        if text[pos] != ".":
            raise _bad_table(text, "unexpected %r at position %d" % (text[pos], pos))
        pos += 1
    if len(parts) > 2:
        raise _bad_table(text, "use at most schema.table")
    if len(parts) == 1:
        parts.insert(0, "public")
    return TableName(parts[0], parts[1])


def _read_quoted(text: str, pos: int) -> Tuple[str, int]:
    chars = []
    pos += 1
    while True:
        close = text.find('"', pos)
        if close < 0:
            raise _bad_table(text, "unterminated double quote")
        chars.append(text[pos:close])
        if text.startswith('""', close):
            chars.append('"')
            pos = close + 2
            continue
        part = "".join(chars)
        if not part:
            raise _bad_table(text, "empty quoted identifier")
        return part, close + 1


def _bad_table(text: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"cannot parse table name {text!r}: {why}. Write it as table, schema.table, "
        f'or with double quotes around parts that need them: \'"My Schema"."My Table"\''
    )
