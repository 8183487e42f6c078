"""Which columns are a table's key, and how a listener's key is read (no server)."""

import psycopg2
import pytest

from flash_wal import ConfigurationError, ListenerConfig
from flash_wal.decoding import default_key
from flash_wal.dispatcher.routes import key_reader
from flash_wal.pgoutput import Column, Relation


def relation(identity, flagged, columns=("a", "b", "c")):
    return Relation(None, 7, "public", "t", identity,
                    tuple(Column(name, 23, -1, identity == "f" or name in flagged) for name in columns))


def lookup_giving(*key):
    return lambda relid: key


@pytest.mark.parametrize("identity, flagged, catalog, expected", [
    ("d", ("b", "c"), ("c", "b"), ("c", "b")),  # the flags' columns, the catalog's order
    ("i", ("a",), ("a",), ("a",)),
    ("d", ("b",), ("a",), ("b",)),  # the catalog moved on (a backlog): the WAL's flags win
    ("d", ("b", "c"), (), ("b", "c")),  # in column order, as best known
    ("d", (), (), ()),  # no primary key
    ("f", (), ("c", "a"), ("c", "a")),  # FULL flags every column: the catalog's key
    ("f", (), (), ()),
    ("f", (), ("gone",), ()),  # a key of a later schema, whose column this one lacks
    ("n", (), ("a",), ("a",)),
])
def test_the_default_key(identity, flagged, catalog, expected):
    assert default_key(relation(identity, flagged), lookup_giving(*catalog)) == expected


def test_the_default_key_without_a_catalog():
    assert default_key(relation("d", ("b",)), None) == ("b",)
    assert default_key(relation("f", ()), None) == ()


def test_a_look_up_that_fails_once_is_tried_again(caplog):
    calls = []

    def fails_once(relid):
        calls.append(relid)
        if len(calls) == 1:
            raise psycopg2.OperationalError("server closed the connection unexpectedly")
        return ("c", "a")

    assert default_key(relation("f", ()), fails_once) == ("c", "a")
    assert calls == [7, 7] and "could not look up" not in caplog.text


def test_a_failed_look_up_leaves_the_flags(caplog):
    def failing(relid):
        raise psycopg2.OperationalError("connection lost")

    assert default_key(relation("i", ("c",)), failing) == ("c",)
    assert default_key(relation("f", ()), failing) == ()
    assert "could not look up the key of public.t" in caplog.text


def test_key_readers():
    row = {"a": 1, "b": "x", "c": None}
    assert key_reader(()) is None
    assert key_reader(("b",))(row) == ("x",)
    assert key_reader(("c", "a"))(row) == (None, 1)
    assert key_reader(("a", "gone"))(row) == (1, None)  # a dropped column: None, never an error
    assert key_reader(("c", "a")) is key_reader(("c", "a"))  # shared, so told apart by identity


@pytest.mark.parametrize("key, message", [
    ("id", "expected a list"), (("id", "id"), "lists a column twice"), ((1,), "must be column names"),
])
def test_a_malformed_primary_key_is_refused(key, message):
    with pytest.raises(ConfigurationError, match=message):
        ListenerConfig(table="t", primary_key=key)


def test_primary_key_is_a_tuple():
    assert ListenerConfig(table="t", primary_key=["b", "a"]).primary_key == ("b", "a")
    assert ListenerConfig(table="t").primary_key == ()
