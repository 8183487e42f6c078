"""Listener configuration, table names and operations: no server needed."""

import pickle

import pytest

from flash_wal import UNCHANGED_TOAST, Condition, ConfigurationError, Listener, ListenerConfig, Operation
from flash_wal.table_name import TableName, parse_table_name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("posts", ("public", "posts")),
        ("Posts", ("public", "posts")),
        ("stats.name", ("stats", "name")),
        ('"Stats"."Name"', ("Stats", "Name")),
        ('public."posts"', ("public", "posts")),
        ('"we""ird"."a.b"', ('we"ird', "a.b")),
        ("_x$1", ("public", "_x$1")),
        ('"with space"', ("public", "with space")),
    ],
)
def test_table_names_parse_like_postgresql(text, expected):
    assert parse_table_name(text) == TableName(*expected)
    assert str(parse_table_name(text)) == ".".join(expected)


@pytest.mark.parametrize("text", ["", "a.b.c", "a b", '"open', '""', "a;drop", "1abc", ".x", "x.", '"a"b', "x" * 64])
def test_unparseable_table_names_raise_configuration_error(text):
    with pytest.raises(ConfigurationError) as info:
        Listener(table=text)
    assert isinstance(info.value, ValueError)
    assert "table" in str(info.value)


def test_listener_config_forms_are_the_same():
    a = Listener(ListenerConfig(table="posts", fields=["id"], conditions=[Condition("x", 1)], max_parallel=2))
    b = Listener(table="posts", fields=["id"], conditions=[Condition("x", 1)], max_parallel=2)
    assert a.config == b.config
    assert a.config.fields == ("id",)


@pytest.mark.parametrize(
    "options",
    [
        {"max_parallel": 0},
        {"max_parallel": -2},
        {"max_parallel": True},
        {"fields": "id"},
        {"fields": ["id", "id"]},
        {"fields": [1]},
        {"conditions": [("a", 1)]},
    ],
)
def test_bad_listener_options(options):
    with pytest.raises(ConfigurationError):
        Listener(table="posts", **options)


def test_on_off_registration():
    listener = Listener(table="posts")
    calls = []

    @listener.on(Operation.INSERT)
    def first(event):
        calls.append(event)

    def second(event):
        pass

    assert listener.on(Operation.UPDATE | Operation.DELETE, second) is second
    assert listener.callbacks_for(Operation.INSERT) == (first,)
    assert listener.callbacks_for(Operation.DELETE) == (second,)
    assert listener.operations == Operation.INSERT | Operation.UPDATE | Operation.DELETE
    listener.on(Operation.TRUNCATE, first)
    assert listener.callbacks_for(Operation.TRUNCATE) == (first,)
    assert listener.callbacks_for(Operation.INSERT) == (first,)
    listener.off(first)
    assert listener.callbacks_for(Operation.INSERT) == ()
    assert listener.operations == Operation.UPDATE | Operation.DELETE
    with pytest.raises(ConfigurationError):
        listener.off(first)
    with pytest.raises(ConfigurationError):
        listener.on(Operation(0), second)
    with pytest.raises(ConfigurationError):
        listener.on(Operation.INSERT, "not callable")
    assert listener.on("insert,delete", first) is first
    assert listener.callbacks_for(Operation.DELETE) == (second, first)


def test_operation_names_and_flags():
    assert Operation.from_name("insert") is Operation.INSERT
    assert Operation.from_name("TrUnCaTe") is Operation.TRUNCATE
    assert Operation.from_name("all") is Operation.ALL
    assert str(Operation.INSERT) == "INSERT"
    assert str(Operation.INSERT | Operation.DELETE) == "INSERT | DELETE"
    assert str(Operation.ALL) == "INSERT | UPDATE | DELETE | TRUNCATE"
    assert f"{Operation.UPDATE:>8}" == "  UPDATE"
    assert (Operation.INSERT, Operation.UPDATE, Operation.DELETE, Operation.TRUNCATE, Operation.ALL) == (1, 2, 4, 8, 15)
    with pytest.raises(ConfigurationError):
        Operation.from_name("upsert")


def test_condition_equality_and_is_null():
    assert Condition("a", 1).holds({"a": 1})
    assert not Condition("a", 1).holds({"a": 2})
    assert not Condition("a", 1).holds({"a": None})
    assert Condition("a", None).holds({"a": None})
    assert not Condition("a", None).holds({"a": 0})
    assert Condition("a", False).holds({"a": False})
    assert not Condition("a", False).holds({"a": None})


def test_unchanged_toast_is_a_singleton_that_survives_pickling():
    assert repr(UNCHANGED_TOAST) == "UNCHANGED_TOAST"
    assert pickle.loads(pickle.dumps(UNCHANGED_TOAST)) is UNCHANGED_TOAST
    assert type(UNCHANGED_TOAST)() is UNCHANGED_TOAST
