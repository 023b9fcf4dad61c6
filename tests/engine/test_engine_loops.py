"""Loops (engine/node.py LoopSpec, executor._BodyPlan): a loop node runs its body graph once per iteration."""

import copy
import threading
from typing import Annotated

import pytest
from pydantic import Field

import loomtest_nodes as tn
from engine.executor import Executor
from engine.graph import validate
from engine.node import NodeContext, NodeDeclarationError, Outputs, node
from engine.registry import Registry

wf, ln = tn.wf, tn.ln
CALLS = tn.CALLS


def value(executor, result, nid, output="value"):
    return executor.cache.peek(result.signatures[nid])[output]


def loop_wf(start=5, steps=4, body=None, extra=None):
    loop = {"type": "Accumulate", "inputs": {"start": ln("c", "value"), "steps": steps}}
    if body is not None:
        loop["body"] = body
    return wf({
        "c": {"type": "Const", "inputs": {"value": start}},
        "loop": loop,
        "s": {"type": "Show", "inputs": {"value": ln("loop", "value")}},
        **(extra or {}),
    })


def python_accumulate(start, steps):
    v = start
    for step in range(steps):
        v = v + step
    return v


@pytest.mark.parametrize("start, steps", [(5, 4), (0, 0), (-3, 1), (7, 50)])
def test_result_equals_the_python_loop(executor, start, steps):
    r = executor.run(loop_wf(start, steps, body=tn.ACC_BODY))
    assert r.status == "success", r.error
    assert value(executor, r, "s") == python_accumulate(start, steps)
    assert CALLS["Add"] == steps and CALLS["Accumulate"] == 1


def test_default_body_is_used_when_the_file_has_none(executor):
    r = executor.run(loop_wf(1, 3))
    assert value(executor, r, "s") == python_accumulate(1, 3)


def test_body_with_several_nodes_and_outer_links(executor):
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "twice": {"type": "Double", "inputs": {"x": ln("in", "value")}},
        "plus": {"type": "Add", "inputs": {"a": ln("twice", "value"), "b": ln("k", "value")}},  # k is outside
        "out": {"type": "LoopOutput", "inputs": {"value": ln("plus", "value")}},
    }}
    r = executor.run(loop_wf(1, 3, body, extra={"k": {"type": "Const", "inputs": {"value": 10}}}))
    assert r.status == "success", r.error
    v = 1
    for _ in range(3):
        v = 2 * v + 10
    assert value(executor, r, "s") == v
    # the outer node runs before the loop although only the body links to it
    assert list(r.nodes).index("k") < list(r.nodes).index("loop")


def test_body_reading_a_bypassed_outer_node_reads_what_passes_through(executor):
    """A body link to a bypassed node of the graph around it is rewired like the graph's own links (found by
    the property test: the loop's signature looked the bypassed node up)."""
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "plus": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("skip", "value")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("plus", "value")}},
    }}
    extra = {"k": {"type": "Const", "inputs": {"value": 10}},
             "skip": {"type": "Double", "inputs": {"x": ln("k", "value")}, "mode": "bypass"}}
    r = executor.run(loop_wf(1, 3, body, extra=extra))
    assert r.status == "success", r.error
    assert value(executor, r, "s") == 1 + 3 * 10  # Double bypassed: the body adds k itself
    assert "skip" not in r.nodes or r.nodes["skip"].status != "success"
    nested = copy.deepcopy(body)  # the same from a loop inside the loop
    wf = loop_wf(1, 2, {"nodes": {
        "in": {"type": "LoopInput"},
        "inner": {"type": "Accumulate", "inputs": {"start": ln("in", "value"), "steps": 1}, "body": nested},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("inner", "value")}},
    }}, extra=extra)
    r = executor.run(wf)
    assert r.status == "success", r.error
    assert value(executor, r, "s") == 1 + 2 * 10


def test_invariant_body_nodes_run_once(executor):
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "inv": {"type": "Double", "inputs": {"x": ln("k", "value")}},  # depends only on the outer graph
        "inv2": {"type": "Const", "inputs": {"value": 100}},  # depends on nothing
        "sum": {"type": "Add", "inputs": {"a": ln("inv", "value"), "b": ln("inv2", "value")}},
        "step": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("sum", "value")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("step", "value")}},
    }}
    r = executor.run(loop_wf(0, 6, body, extra={"k": {"type": "Const", "inputs": {"value": 1}}}))
    assert r.status == "success", r.error
    assert value(executor, r, "s") == 6 * 102
    assert CALLS["Double"] == 1  # inv: once, not 6 times
    assert CALLS["Const"] == 3  # c, k, inv2
    assert CALLS["Add"] == 1 + 6  # sum once, step per iteration


def test_unused_body_nodes_do_not_run(executor):
    body = {"nodes": {**tn.ACC_BODY["nodes"], "dead": {"type": "Double", "inputs": {"x": ln("in", "value")}}}}
    executor.run(loop_wf(0, 3, body))
    assert CALLS["Double"] == 0


def test_loop_is_cached_and_body_edit_changes_its_signature(executor):
    r1 = executor.run(loop_wf(5, 4, tn.ACC_BODY))
    CALLS.clear()
    r2 = executor.run(loop_wf(5, 4, tn.ACC_BODY))
    assert sum(CALLS.values()) == 0 and r2.nodes["loop"].cached
    edited = {"nodes": {
        "in": {"type": "LoopInput"},
        "add": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": 1}},  # + 1 instead of + step
        "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
    }}
    r3 = executor.run(loop_wf(5, 4, edited))
    assert r3.signatures["loop"] != r1.signatures["loop"]
    assert r3.signatures["c"] == r1.signatures["c"]
    assert not r3.nodes["loop"].cached and value(executor, r3, "s") == 9
    # editing the body's ui only is not a change
    with_ui = {"nodes": {k: {**v, "ui": {"pos": [1, 1]}} for k, v in tn.ACC_BODY["nodes"].items()}, "ui": {"z": 1}}
    r4 = executor.run(loop_wf(5, 4, with_ui))
    assert r4.signatures["loop"] == r1.signatures["loop"]


def test_loop_signature_independent_of_ids(executor):
    def build(outer_id, body_ids):
        i, a, o = body_ids
        body = {"nodes": {
            i: {"type": "LoopInput"},
            a: {"type": "Add", "inputs": {"a": ln(i, "value"), "b": ln(outer_id, "value")}},
            o: {"type": "LoopOutput", "inputs": {"value": ln(a, "value")}},
        }}
        return loop_wf(1, 3, body, extra={outer_id: {"type": "Const", "inputs": {"value": 7}}})

    r1 = executor.run(build("k", ("in", "add", "out")))
    CALLS.clear()
    r2 = executor.run(build("other", ("x", "y", "z")))
    assert r2.signatures["loop"] == r1.signatures["loop"]
    assert sum(CALLS.values()) == 0


def test_outer_change_seen_only_by_the_body_reruns_the_loop(executor):
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "add": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("k", "value")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
    }}
    executor.run(loop_wf(0, 2, body, extra={"k": {"type": "Const", "inputs": {"value": 1}}}))
    r = executor.run(loop_wf(0, 2, body, extra={"k": {"type": "Const", "inputs": {"value": 2}}}))
    assert not r.nodes["loop"].cached and value(executor, r, "s") == 4


def test_body_validation_errors_name_loop_and_body_node():
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "add": {"type": "Add", "inputs": {"a": ln("in", "nothing"), "b": "2"}},
        "ghost": {"type": "Nope"},
        "out": {"type": "LoopOutput", "inputs": {}},
    }}
    graph, errors = validate(loop_wf(0, 2, body), tn.registry())
    assert graph is None
    got = sorted((e.node_id, e.input, e.code) for e in errors)
    assert got == [
        ("loop/add", "a", "link_unknown_output"),
        ("loop/add", "b", "invalid_literal"),
        ("loop/ghost", None, "unknown_type"),
        ("loop/out", "value", "missing_input"),
    ]


def test_body_cycle_and_type_errors():
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "a": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("b", "value")}},
        "b": {"type": "Add", "inputs": {"a": ln("a", "value")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("b", "value")}},
    }}
    graph, errors = validate(loop_wf(0, 2, body), tn.registry())
    assert [e.code for e in errors] == ["cycle"] and "loop/a" in errors[0].message and "loop/b" in errors[0].message
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "t": {"type": "Text", "inputs": {"text": "x"}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("t", "value")}},
    }}
    graph, errors = validate(loop_wf(0, 2, body), tn.registry())
    assert [(e.node_id, e.input, e.code) for e in errors] == [("loop/out", "value", "type_mismatch")]


def test_body_linking_to_a_downstream_outer_node_is_a_cycle():
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "add": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("s", "value")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
    }}
    raw = loop_wf(0, 2, body)
    raw["nodes"]["s"] = {"type": "Double", "inputs": {"x": ln("loop", "value")}}
    raw["nodes"]["show"] = {"type": "Show", "inputs": {"value": ln("s", "value")}}
    graph, errors = validate(raw, tn.registry())
    assert [e.code for e in errors] == ["cycle"]


def test_loop_boundary_nodes_outside_a_body():
    graph, errors = validate(wf({"i": {"type": "LoopInput"}, "s": {"type": "Show", "inputs": {"value": ln("i", "value")}}}),
                             tn.registry())
    assert [(e.node_id, e.code) for e in errors] == [("i", "unknown_type"), ("s", "link_unknown_node")]
    assert "only inside a loop node's body" in errors[0].message


def test_exception_inside_the_body_names_the_body_node(executor):
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "boom": {"type": "Fail", "inputs": {"x": ln("in", "value"), "message": "step failed"}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("boom", "value")}},
    }}
    r = executor.run(loop_wf(0, 3, body))
    assert r.status == "error"
    assert r.error == {"node_id": "loop/boom", "node_type": "Fail", "error_type": "NodeError", "message": "step failed"}
    assert r.nodes["loop"].status == "error"
    # and the executor still works
    assert executor.run(loop_wf(0, 3, tn.ACC_BODY)).status == "success"


def test_stop_iteration_inside_the_body_is_an_error_not_the_end_of_the_loop(reg, settings):
    @node(name="Exhausted", output_name="value")
    def exhausted(x: int) -> int:
        return next(iter(()))  # raises StopIteration

    ex = Executor(Registry([*tn.ALL, exhausted]), settings)
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "e": {"type": "Exhausted", "inputs": {"x": ln("in", "value")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("e", "value")}},
    }}
    r = ex.run(loop_wf(0, 3, body))
    assert r.status == "error" and r.error["node_id"] == "loop/e"


def test_interrupt_inside_a_loop(executor):
    stop = threading.Event()
    body = {"nodes": {
        "in": {"type": "LoopInput"},
        "slow": {"type": "Slow", "inputs": {"x": ln("in", "value"), "steps": 1, "stop_at": 0}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("slow", "value")}},
    }}
    r = executor.run(loop_wf(0, 5, body), interrupt=stop)
    assert r.status == "interrupted" and CALLS["Slow"] == 1


class PairIn(Outputs):
    value: int
    i: int


class PairOut(Outputs):
    value: int


INNER_BODY = {"nodes": {
    "in": {"type": "LoopInput"},
    "add": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": 1}},
    "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
}}


@node(name="Repeat", output_name="value", loop=(PairIn, PairOut, INNER_BODY))
def repeat(start: int, ctx: NodeContext, times: Annotated[int, Field(ge=0)] = 2) -> int:
    v = start
    for i in range(times):
        ctx.progress(i + 1, times)
        v = (yield PairIn(value=v, i=i))["value"]
    return v


def test_nested_loops(settings):
    ex = Executor(Registry([*tn.ALL, repeat]), settings)
    outer_body = {"nodes": {
        "in": {"type": "LoopInput"},
        "inner": {"type": "Repeat", "inputs": {"start": ln("in", "value"), "times": 3}, "body": {"nodes": {
            "in": {"type": "LoopInput"},
            "add": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("k", "value")}},  # k: top level
            "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
        }}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("inner", "value")}},
    }}
    raw = wf({
        "k": {"type": "Const", "inputs": {"value": 10}},
        "c": {"type": "Const", "inputs": {"value": 0}},
        "loop": {"type": "Repeat", "inputs": {"start": ln("c", "value"), "times": 2}, "body": outer_body},
        "s": {"type": "Show", "inputs": {"value": ln("loop", "value")}},
    })
    r = ex.run(raw)
    assert r.status == "success", r.error
    assert value(ex, r, "s") == 60 and CALLS["Add"] == 6
    # editing the inner body changes the outer loop's signature
    raw2 = copy.deepcopy(raw)
    raw2["nodes"]["loop"]["body"]["nodes"]["inner"]["body"]["nodes"]["add"]["inputs"]["b"] = 1
    r2 = ex.run(raw2)
    assert r2.signatures["loop"] != r.signatures["loop"] and value(ex, r2, "s") == 6


def test_loop_progress_events(settings):
    ex = Executor(Registry([*tn.ALL, repeat]), settings)
    got = []
    raw = wf({
        "c": {"type": "Const", "inputs": {"value": 0}},
        "loop": {"type": "Repeat", "inputs": {"start": ln("c", "value"), "times": 3}},
        "s": {"type": "Show", "inputs": {"value": ln("loop", "value")}},
    })
    r = ex.run(raw, on_event=got.append)
    assert value(ex, r, "s") == 3
    assert [(e.node_id, e.value, e.max) for e in got if e.type == "node_progress"] == [("loop", 1, 3), ("loop", 2, 3), ("loop", 3, 3)]


def test_loop_declaration_errors():
    def not_gen(x: int) -> int:
        return x

    with pytest.raises(NodeDeclarationError):
        node(loop=(PairIn, PairOut, INNER_BODY))(not_gen)
