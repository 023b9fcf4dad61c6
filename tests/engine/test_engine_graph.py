"""engine/graph.py: one test per error code, all errors in one pass, planning, bypass."""

import re

import pytest

import loomtest_nodes as tn
from engine import graph as G
from engine.graph import GraphError, InvalidWorkflow, validate, validate_or_raise

wf, ln = tn.wf, tn.ln


def errs(raw, **kw):
    graph, errors = validate(raw, tn.registry(), **kw)
    assert graph is None, "expected the workflow to be invalid"
    assert errors and all(isinstance(e, GraphError) for e in errors)
    return errors


def only(raw, code, **kw):
    errors = errs(raw, **kw)
    assert [e.code for e in errors] == [code], errors
    return errors[0]


def ok(raw, **kw):
    graph, errors = validate(raw, tn.registry(), **kw)
    assert errors == [], errors
    return graph


def show(src, out="value", nid="s"):
    return {nid: {"type": "Show", "inputs": {"value": ln(src, out)}}}


def test_all_codes_are_documented_and_tested():
    documented = re.search(r"Error codes: (.*?)\.\n", G.__doc__, re.S).group(1)
    codes = {c.strip() for c in documented.replace("\n", " ").split(",")}
    tested = {name[len("test_code_"):] for name in globals() if name.startswith("test_code_")}
    assert codes == tested


def test_code_invalid_workflow():
    e = only({"format": "latentloom.workflow", "version": 99, "nodes": {"a": {"type": "Const"}}}, "invalid_workflow")
    assert "newer" in e.message and e.node_id is None


def test_code_bad_node():
    errors = errs(wf({
        "a": "not an object",
        "b": {"inputs": {}},
        "c": {"type": "Const", "inputs": [1]},
        "d": {"type": "Const", "colour": "red"},
        "e": {"type": "Const", "mode": "muted"},
        **show("f"),
        "f": {"type": "Const"},
    }))
    assert {(e.node_id, e.code) for e in errors} == {("a", "bad_node"), ("b", "bad_node"), ("c", "bad_node"),
                                                       ("d", "bad_node"), ("e", "bad_node")}
    msgs = {e.node_id: e.message for e in errors}
    assert "must be an object" in msgs["a"] and "'type'" in msgs["b"] and "'inputs'" in msgs["c"]
    assert "colour" in msgs["d"] and "muted" in msgs["e"]


def test_code_unknown_type():
    e = only(wf({"a": {"type": "NoSuchNode"}}), "unknown_type")
    assert e.node_id == "a" and "NoSuchNode" in e.message


def test_code_unknown_input():
    e = only(wf({"a": {"type": "Const", "inputs": {"valu": 1}}, **show("a")}), "unknown_input")
    assert (e.node_id, e.input) == ("a", "valu") and "value" in e.message  # lists the real inputs


def test_code_missing_input():
    e = only(wf({"d": {"type": "Double"}, **show("d")}), "missing_input")
    assert (e.node_id, e.input) == ("d", "x") and "INT" in e.message


def test_code_bad_link():
    e = only(wf({"c": {"type": "Const"}, "s": {"type": "Show", "inputs": {"value": {"node": "c"}}}}), "bad_link")
    assert (e.node_id, e.input) == ("s", "value")
    e = only(wf({"c": {"type": "Const"}, "s": {"type": "Show", "inputs": {"value": {"node": 3, "output": "value"}}}}), "bad_link")
    assert "string" in e.message


def test_code_link_unknown_node():
    e = only(wf(show("ghost")), "link_unknown_node")
    assert (e.node_id, e.input) == ("s", "value") and "ghost" in e.message


def test_code_link_unknown_output():
    e = only(wf({"c": {"type": "Split", "inputs": {"x": 1}}, **show("c", "middle")}), "link_unknown_output")
    assert (e.node_id, e.input) == ("s", "value") and "low" in e.message and "high" in e.message


def test_code_type_mismatch():
    e = only(wf({
        "b": {"type": "MakeBase"},
        "u": {"type": "UseSub", "inputs": {"thing": ln("b", "value")}},  # a parent where a child is needed
        **show("u"),
    }), "type_mismatch")
    assert (e.node_id, e.input) == ("u", "thing") and "T_SUB" in e.message and "T_BASE" in e.message
    e = only(wf({"h": {"type": "Half", "inputs": {"x": 2.0}}, "d": {"type": "Double", "inputs": {"x": ln("h", "value")}},
                 **show("d")}), "type_mismatch")  # FLOAT into INT is refused
    # the allowed directions validate
    ok(wf({"b": {"type": "MakeSubSub"}, "u": {"type": "UseSub", "inputs": {"thing": ln("b", "value")}}, **show("u")}))
    ok(wf({"c": {"type": "Const"}, "h": {"type": "Half", "inputs": {"x": ln("c", "value")}}, **show("h")}))


def test_code_link_required():
    e = only(wf({"u": {"type": "UseSub", "inputs": {"thing": "a literal"}}, **show("u")}), "link_required")
    assert (e.node_id, e.input) == ("u", "thing")


@pytest.mark.parametrize("inputs, name", [
    ({"flag": "false"}, "flag"),  # the string "false" is not True (nor False)
    ({"flag": 1}, "flag"),
    ({"ratio": "0.5"}, "ratio"),
    ({"ratio": True}, "ratio"),
])
def test_code_invalid_literal(inputs, name):
    e = only(wf({"p": {"type": "Pick", "inputs": inputs}, **show("p")}), "invalid_literal")
    assert (e.node_id, e.input) == ("p", name)


@pytest.mark.parametrize("value", [1.5, "3", True, None, [3], {"value": "3"}])
def test_invalid_literal_for_int(value):
    e = only(wf({"c": {"type": "Const", "inputs": {"value": value}}, **show("c")}), "invalid_literal")
    assert (e.node_id, e.input) == ("c", "value")


def test_code_out_of_range():
    e = only(wf({"c": {"type": "Split", "inputs": {"x": 1, "at": 101}}, **show("c", "low")}), "out_of_range")
    assert (e.node_id, e.input) == ("c", "at") and "101" in e.message
    e = only(wf({"p": {"type": "Pick", "inputs": {"ratio": -0.1}}, **show("p")}), "out_of_range")
    assert e.input == "ratio"


def test_code_not_in_choices():
    e = only(wf({"p": {"type": "Pick", "inputs": {"mode": "z"}}, **show("p")}), "not_in_choices")  # static Literal
    assert (e.node_id, e.input) == ("p", "mode") and "'a'" in e.message
    e = only(wf({"c": {"type": "Colour", "inputs": {"name": "purple"}}, **show("c")}), "not_in_choices")  # computed
    assert (e.node_id, e.input) == ("c", "name") and "green" in e.message


def test_code_cycle():
    e = only(wf({
        "c": {"type": "Const"},
        "a1": {"type": "Add", "inputs": {"a": ln("c", "value"), "b": ln("a3", "value")}},
        "a2": {"type": "Add", "inputs": {"a": ln("a1", "value")}},
        "a3": {"type": "Add", "inputs": {"a": ln("a2", "value")}},
        **show("a3"),
    }), "cycle")
    for nid in ("a1", "a2", "a3"):
        assert nid in e.message
    assert "'c'" not in e.message and " c " not in e.message and "s" not in re.findall(r"\w+", e.message)
    # a node feeding itself
    e = only(wf({"a": {"type": "Add", "inputs": {"a": ln("a", "value")}}, **show("a")}), "cycle")
    assert "a -> a" in e.message


def test_code_no_output():
    e = only(wf({"c": {"type": "Const"}, "d": {"type": "Double", "inputs": {"x": ln("c", "value")}}}), "no_output")
    assert "output node" in e.message


def test_code_bypass_no_input():
    e = only(wf({
        "c": {"type": "Const"},
        "t": {"type": "Text", "inputs": {"text": "hi"}},
        "h": {"type": "Half", "mode": "bypass", "inputs": {"x": 1.0}},  # no linked input to pass through
        **show("h"),
    }), "bypass_no_input")
    assert (e.node_id, e.input) == ("s", "value") and "'h'" in e.message


def test_code_loop_body():
    e = only(wf({"l": {"type": "Accumulate", "body": {"nodes": {"in": {"type": "LoopInput"}}}}, **show("l")}), "loop_body")
    assert e.node_id == "l" and "exactly one LoopOutput" in e.message
    e = only(wf({"l": {"type": "Accumulate", "body": []}, **show("l")}), "loop_body")
    assert "'nodes'" in e.message


def test_code_unknown_output_node():
    e = only(wf({"c": {"type": "Const"}, **show("c")}), "unknown_output_node", targets=["nope"])
    assert e.node_id == "nope"


# --- one pass, planning, bypass ------------------------------------------------------------------------
def test_all_errors_in_one_pass():
    errors = errs(wf({
        "c": {"type": "Const", "inputs": {"value": "3"}},  # invalid literal
        "d": {"type": "Double"},  # missing input
        "x": {"type": "Nope"},  # unknown type
        "s": {"type": "Show", "inputs": {"value": ln("d", "value")}},
    }))
    assert sorted((e.node_id, e.input, e.code) for e in errors) == [
        ("c", "value", "invalid_literal"), ("d", "x", "missing_input"), ("x", None, "unknown_type")]
    with pytest.raises(InvalidWorkflow) as info:
        validate_or_raise(wf({"c": {"type": "Const", "inputs": {"value": "3"}}, "d": {"type": "Double"},
                              "x": {"type": "Nope"}}), tn.registry())
    assert len(info.value.errors) == 3
    assert "node c, input value" in str(info.value)


def test_every_error_names_node_and_input():
    errors = errs(wf({
        "a": {"type": "Add", "inputs": {"a": "1", "b": ln("ghost", "value"), "c": 3}},
        "s": {"type": "Show", "inputs": {"value": ln("a", "nothing")}},
    }))
    assert {(e.node_id, e.input) for e in errors} == {("a", "a"), ("a", "b"), ("a", "c"), ("s", "value")}
    for e in errors:
        assert str(e).startswith(f"node {e.node_id}, input {e.input}: ")


def test_planning_runs_only_what_outputs_need():
    graph = ok(wf({
        "c": {"type": "Const", "inputs": {"value": 2}},
        "d": {"type": "Double", "inputs": {"x": ln("c", "value")}},
        "unused": {"type": "Double", "inputs": {"x": ln("c", "value")}},
        "lonely": {"type": "Const"},
        "s": {"type": "Show", "inputs": {"value": ln("d", "value")}},
    }))
    assert graph.order == ["c", "d", "s"] and graph.targets == ["s"]
    assert set(graph.nodes) == {"c", "d", "unused", "lonely", "s"}
    # requested targets: only what they need, even a non-output node
    graph = ok(wf({
        "c": {"type": "Const"}, "d": {"type": "Double", "inputs": {"x": ln("c", "value")}},
        **show("d", nid="s1"), **show("c", nid="s2"),
    }), targets=["s2"])
    assert graph.order == ["c", "s2"]
    graph = ok(wf({"c": {"type": "Const"}, "d": {"type": "Double", "inputs": {"x": ln("c", "value")}}}), targets=["d"])
    assert graph.order == ["c", "d"]


def test_order_is_topological_for_diamonds():
    graph = ok(wf({
        "s": {"type": "Show", "inputs": {"value": ln("j", "value")}},
        "j": {"type": "Add", "inputs": {"a": ln("l", "value"), "b": ln("r", "value")}},
        "l": {"type": "Double", "inputs": {"x": ln("c", "value")}},
        "r": {"type": "Double", "inputs": {"x": ln("c", "value")}},
        "c": {"type": "Const"},
    }))
    pos = {n: i for i, n in enumerate(graph.order)}
    assert pos["c"] < pos["l"] < pos["j"] and pos["c"] < pos["r"] < pos["j"] < pos["s"]


def test_defaults_filled_and_literals_recorded():
    graph = ok(wf({"p": {"type": "Pick", "inputs": {"mode": "b"}}, **show("p")}))
    assert graph.nodes["p"].literals == {"mode": "b", "flag": False, "ratio": 0.5}
    assert graph.nodes["s"].links == {"value": ("p", "value")}


def test_bypass_rewires_links():
    graph = ok(wf({
        "c": {"type": "Const", "inputs": {"value": 3}},
        "d1": {"type": "Double", "inputs": {"x": ln("c", "value")}, "mode": "bypass"},
        "d2": {"type": "Double", "inputs": {"x": ln("d1", "value")}, "mode": "bypass"},
        "s": {"type": "Show", "inputs": {"value": ln("d2", "value")}},
    }))
    assert graph.nodes["s"].links["value"] == ("c", "value")
    assert graph.order == ["c", "s"]


def test_bypassed_output_node_is_not_a_target():
    e = only(wf({"c": {"type": "Const"}, "s": {"type": "Show", "inputs": {"value": ln("c", "value")}, "mode": "bypass"}}),
             "no_output")
    assert e.node_id is None


def test_ui_fields_are_ignored():
    a = ok(wf({"c": {"type": "Const", "ui": {"pos": [1, 2]}}, **show("c")}, ui={"zoom": 2}))
    assert a.order == ["c", "s"]


def test_loop_input_outside_a_body_has_a_hint():
    errors = errs(wf({"i": {"type": "LoopInput"}, "o": {"type": "LoopOutput"}, **show("i")}))
    codes = {(e.node_id, e.code) for e in errors}
    assert ("i", "unknown_type") in codes and ("o", "unknown_type") in codes
    assert all("only inside a loop" in e.message for e in errors if e.code == "unknown_type")


def test_non_string_node_ids_never_crash():
    raw = wf({"c": {"type": "Const"}, **show("c")})
    raw["nodes"] = {1: {"type": "Const"}, "s": {"type": "Show", "inputs": {"value": ln("1", "value")}}}
    errors = errs(raw)
    assert [(e.node_id, e.code) for e in errors] == [("1", "bad_node"), ("s", "link_unknown_node")]
    assert "string" in errors[0].message


def test_bypass_plans_only_what_is_passed_through():
    graph = ok(wf({
        "c1": {"type": "Const", "inputs": {"value": 1}},
        "c2": {"type": "Const", "inputs": {"value": 2}},
        "add": {"type": "Add", "inputs": {"a": ln("c1", "value"), "b": ln("c2", "value")}, "mode": "bypass"},
        "s": {"type": "Show", "inputs": {"value": ln("add", "value")}},
    }))
    assert graph.nodes["s"].links["value"] == ("c1", "value")  # the first input of the output's type
    assert graph.order == ["c1", "s"]  # c2 fed only the bypassed input that is not passed on


def test_bypass_inside_a_loop_body():
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "d": {"type": "Double", "inputs": {"x": ln("in", "value")}, "mode": "bypass"},
        "add": {"type": "Add", "inputs": {"a": ln("d", "value"), "b": ln("in", "step")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
    }}
    graph = ok(wf({"l": {"type": "Accumulate", "inputs": {"start": 1, "steps": 3}, "body": body},
                   "s": {"type": "Show", "inputs": {"value": ln("l", "value")}}}))
    b = graph.nodes["l"].body
    assert "d" not in b.order and b.nodes["add"].links["a"] == ("in", "value")
