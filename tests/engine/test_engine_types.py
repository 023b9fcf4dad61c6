"""engine/types.py: the connection rule, declarations, and the table exported to the editor."""

import json

import pytest

import loomtest_nodes  # noqa: F401  (declares T_BASE < T_SUB < T_SUBSUB, T_OTHER)
from engine import types as t
from engine.types import ANY, FLOAT, IMAGE, INT, LATENT, MASK, STRING, can_connect, export_types, socket_type


def test_same_type_connects():
    assert can_connect("IMAGE", "IMAGE")
    assert can_connect("T_OTHER", "T_OTHER")


def test_any_connects_on_either_side():
    assert can_connect(ANY.name, "LATENT")
    assert can_connect("LATENT", ANY.name)
    assert can_connect(ANY.name, ANY.name)


def test_int_widens_to_float_but_not_back():
    assert can_connect(INT.name, FLOAT.name)
    assert not can_connect(FLOAT.name, INT.name)
    assert not can_connect(INT.name, STRING.name)
    assert not can_connect("BOOLEAN", INT.name)


def test_declared_supertypes_are_transitive_and_one_way():
    assert can_connect("T_SUB", "T_BASE")
    assert can_connect("T_SUBSUB", "T_SUB")
    assert can_connect("T_SUBSUB", "T_BASE")  # transitively
    assert not can_connect("T_BASE", "T_SUB")  # a parent is not usable where a child is needed
    assert not can_connect("T_BASE", "T_SUBSUB")


def test_unrelated_types_are_refused():
    assert not can_connect("IMAGE", "LATENT")
    assert not can_connect("MASK", "IMAGE")
    assert not can_connect("T_OTHER", "T_BASE")
    assert not can_connect("NO_SUCH_TYPE", "IMAGE")


def test_redeclaring_identically_returns_the_same_type():
    again = socket_type("T_SUB", "#123457", "test sub type", supertypes=("T_BASE",))
    assert again is t.get_type("T_SUB")


@pytest.mark.parametrize("kwargs", [
    {"color": "#000000"},
    {"description": "something else"},
    {"supertypes": ("T_OTHER",)},
])
def test_redeclaring_differently_raises(kwargs):
    base = {"color": "#123457", "description": "test sub type", "supertypes": ("T_BASE",)}
    with pytest.raises(ValueError, match="already declared differently"):
        socket_type("T_SUB", **{**base, **kwargs})


def test_unknown_supertype_raises():
    with pytest.raises(ValueError, match="unknown super-type"):
        socket_type("T_ORPHAN", supertypes=("T_NOT_DECLARED",))
    assert t.get_type("T_ORPHAN") is None


def test_compatibility_learned_after_a_late_declaration():
    # asking before a type exists must not freeze the answer once it is declared
    assert not can_connect("T_LATE_CHILD", "T_BASE")
    socket_type("T_LATE_CHILD", supertypes=("T_BASE",))
    assert can_connect("T_LATE_CHILD", "T_BASE")


def test_optional_socket_from_union_with_none():
    opt = MASK | None
    assert isinstance(opt, t.OptionalSocket) and opt.inner is MASK
    with pytest.raises(TypeError):
        MASK | 3  # noqa: B018


def test_export_types_shape():
    table = export_types()
    json.dumps(table)
    names = [row["name"] for row in table]
    assert names == sorted(names)
    for row in table:
        assert set(row) == {"name", "color", "supertypes", "description"}
        assert isinstance(row["supertypes"], list)
        assert row["color"].startswith("#")
    by_name = {row["name"]: row for row in table}
    for core in (IMAGE, LATENT, MASK, INT, FLOAT, STRING, ANY):
        assert core.name in by_name
    assert by_name["T_SUB"]["supertypes"] == ["T_BASE"]
    assert by_name["IMAGE"]["color"] == IMAGE.color
