"""engine/executor.py: cache skips proven by call counts, events, failures, interrupts, deep graphs."""

import threading
import time

from pydantic import TypeAdapter

import loomtest_nodes as tn
from engine import events as ev
from engine.cache import OutputCache
from engine.executor import Executor
from engine.graph import validate

wf, ln = tn.wf, tn.ln
CALLS = tn.CALLS


def value(executor, result, nid, output="value"):
    """A node's output value, read from the cache without touching it."""
    hit = executor.cache.peek(result.signatures[nid])
    assert hit is not None, f"{nid} is not cached"
    return hit[output]


def pipeline(a=2, b=5):
    """c1 -> d1 -\\
                  add -> s          c2 -> d2 -/"""
    return wf({
        "c1": {"type": "Const", "inputs": {"value": a}},
        "c2": {"type": "Const", "inputs": {"value": b}},
        "d1": {"type": "Double", "inputs": {"x": ln("c1", "value")}},
        "d2": {"type": "Double", "inputs": {"x": ln("c2", "value")}},
        "add": {"type": "Add", "inputs": {"a": ln("d1", "value"), "b": ln("d2", "value")}},
        "s": {"type": "Show", "inputs": {"value": ln("add", "value")}},
    })


def test_runs_and_computes(executor):
    r = executor.run(pipeline(2, 5))
    assert r.status == "success" and r.error is None
    assert value(executor, r, "s") == 14
    assert CALLS == {"Const": 2, "Double": 2, "Add": 1, "Show": 1}
    assert set(r.nodes) == {"c1", "c2", "d1", "d2", "add", "s"}
    assert all(rep.status == "success" and not rep.cached and rep.seconds >= 0 for rep in r.nodes.values())


def test_rerun_makes_no_calls(executor):
    executor.run(pipeline())
    CALLS.clear()
    r = executor.run(pipeline())
    assert r.status == "success"
    assert sum(CALLS.values()) == 0
    assert all(rep.status == "cached" and rep.cached for rep in r.nodes.values())


def test_changing_one_literal_reruns_only_it_and_descendants(executor):
    executor.run(pipeline(2, 5))
    CALLS.clear()
    r = executor.run(pipeline(2, 6))  # c2 changed: c2, d2, add, s re-run; c1, d1 come from the cache
    assert CALLS == {"Const": 1, "Double": 1, "Add": 1, "Show": 1}
    assert r.nodes["c1"].cached and r.nodes["d1"].cached
    assert not any(r.nodes[n].cached for n in ("c2", "d2", "add", "s"))
    assert value(executor, r, "s") == 16


def test_identical_subgraph_in_another_workflow_is_reused(executor):
    executor.run(pipeline(2, 5))
    CALLS.clear()
    other = wf({  # different ids, one shared branch (Const 2 -> Double) and a new one
        "k": {"type": "Const", "inputs": {"value": 2}},
        "twice": {"type": "Double", "inputs": {"x": ln("k", "value")}},
        "again": {"type": "Double", "inputs": {"x": ln("twice", "value")}},
        "out": {"type": "Show", "inputs": {"value": ln("again", "value")}},
    })
    r = executor.run(other)
    assert r.nodes["k"].cached and r.nodes["twice"].cached
    assert CALLS == {"Double": 1, "Show": 1}
    assert value(executor, r, "out") == 8


def test_two_executors_share_a_cache(reg, settings):
    cache = OutputCache()
    Executor(reg, settings, cache).run(pipeline())
    CALLS.clear()
    Executor(reg, settings, cache).run(pipeline())
    assert sum(CALLS.values()) == 0


def test_non_deterministic_nodes_rerun_with_their_descendants(executor):
    raw = wf({
        "r": {"type": "RandomInt"},
        "d": {"type": "Double", "inputs": {"x": ln("r", "value")}},
        "c": {"type": "Const", "inputs": {"value": 1}},
        "s": {"type": "Show", "inputs": {"value": ln("d", "value")}},
        "s2": {"type": "Show", "inputs": {"value": ln("c", "value")}},
    })
    r1 = executor.run(raw)
    r2 = executor.run(raw)
    assert CALLS["RandomInt"] == 2 and CALLS["Double"] == 2 and CALLS["Const"] == 1
    assert CALLS["Show"] == 3  # s twice, s2 once
    assert value(executor, r1, "s") == 2 and value(executor, r2, "s") == 4
    assert r2.nodes["c"].cached and r2.nodes["s2"].cached and not r2.nodes["s"].cached


def test_fingerprint_change_reruns_the_reader(executor, tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    raw = wf({"r": {"type": "ReadFile", "inputs": {"path": str(f)}}, "s": {"type": "Show", "inputs": {"value": ln("r", "value")}}})
    executor.run(raw)
    executor.run(raw)
    assert CALLS["ReadFile"] == 1
    f.write_text("bbb")
    r = executor.run(raw)
    assert CALLS["ReadFile"] == 2 and value(executor, r, "s") == "bbb"


def test_events_in_order(executor):
    got = []
    executor.run(wf({"c": {"type": "Const", "inputs": {"value": 1}}, **{"s": {"type": "Show", "inputs": {"value": ln("c", "value")}}}}))
    raw = wf({
        "c": {"type": "Const", "inputs": {"value": 1}},  # cached from the run above
        "w": {"type": "Slow", "inputs": {"x": ln("c", "value"), "steps": 2}},
        "s": {"type": "Show", "inputs": {"value": ln("w", "value")}},
    })
    r = executor.run(raw, on_event=got.append, run_id="run-1")
    assert r.status == "success"
    kinds = [(e.type, getattr(e, "node_id", None)) for e in got]
    assert kinds == [
        ("run_started", None), ("nodes_cached", None),
        ("node_started", "w"), ("node_progress", "w"), ("node_progress", "w"), ("node_finished", "w"),
        ("node_started", "s"), ("node_finished", "s"),
        ("run_finished", None),
    ]
    assert all(e.run_id == "run-1" for e in got)
    assert got[0].nodes == ["c", "w", "s"] and got[1].nodes == ["c"]
    assert [(e.value, e.max) for e in got if e.type == "node_progress"] == [(1, 2), (2, 2)]
    finished = [e for e in got if e.type == "node_finished"]
    assert all(isinstance(e.seconds, float) and e.seconds >= 0 and not e.cached for e in finished)
    assert finished[0].node_type == "Slow"
    assert got[-1].seconds >= sum(e.seconds for e in finished)
    adapter = TypeAdapter(ev.AnyEvent)
    for e in got:  # every event serialises, and parses back through the discriminated union
        assert adapter.validate_json(e.model_dump_json()).model_dump() == e.model_dump()


def test_cached_output_node_reports_its_ui(executor, settings):
    raw = wf({"c": {"type": "Const", "inputs": {"value": 3}}, "w": {"type": "WriteText", "inputs": {"value": ln("c", "value")}}})
    executor.run(raw)
    got = []
    r = executor.run(raw, on_event=got.append)
    assert CALLS["WriteText"] == 1
    fin = [e for e in got if e.type == "node_finished"]
    assert len(fin) == 1 and fin[0].cached and fin[0].ui["text"] == ["3"]
    assert r.ui["w"].text == ["3"]
    paths = r.output_paths(settings)
    assert paths == {"w": [str((settings.output_dir / "out.txt").resolve())]}


def test_listener_errors_never_break_a_run(executor):
    def broken(event):
        raise RuntimeError("listener bug")

    executor.listeners.append(broken)
    r = executor.run(pipeline())
    assert r.status == "success" and value(executor, r, "s") == 14


def test_failing_node(executor, settings):
    raw = wf({
        "c": {"type": "Const", "inputs": {"value": 1}},
        "saved": {"type": "WriteText", "inputs": {"value": ln("c", "value"), "name": "kept.txt"}},
        "f": {"type": "Fail", "inputs": {"x": ln("c", "value"), "message": "the model exploded"}},
        "after": {"type": "Double", "inputs": {"x": ln("f", "value")}},
        "s": {"type": "Show", "inputs": {"value": ln("after", "value")}},
    })
    graph, _ = validate(raw, executor.registry, settings)
    assert graph.order.index("saved") < graph.order.index("f")
    got = []
    r = executor.run(raw, on_event=got.append)
    assert r.status == "error"
    assert r.error == {"node_id": "f", "node_type": "Fail", "error_type": "NodeError", "message": "the model exploded"}
    assert r.nodes["f"].status == "error" and r.nodes["after"].status == "pending" and CALLS["Double"] == 0
    failed = got[-1]
    assert isinstance(failed, ev.RunFailed)
    assert (failed.node_id, failed.node_type, failed.error_type, failed.message) == ("f", "Fail", "NodeError", "the model exploded")
    assert not any(e.type == "run_finished" for e in got)
    assert (settings.output_dir / "kept.txt").read_text() == "1"  # what was saved stays

    # the executor and its cache are usable for the next run: the fixed workflow re-uses what ran
    CALLS.clear()
    raw["nodes"]["f"] = {"type": "Double", "inputs": {"x": ln("c", "value")}}
    r2 = executor.run(raw)
    assert r2.status == "success" and value(executor, r2, "s") == 4
    assert r2.nodes["c"].cached and r2.nodes["saved"].cached
    assert CALLS == {"Double": 2, "Show": 1}


def test_python_exception_names_node_and_type(executor):
    r = executor.run(wf({"f": {"type": "Fail", "inputs": {"kind": "value", "message": "bad value"}},
                         "s": {"type": "Show", "inputs": {"value": ln("f", "value")}}}))
    assert r.status == "error"
    assert r.error["node_id"] == "f" and r.error["node_type"] == "Fail"
    assert r.error["error_type"] == "ValueError" and r.error["message"] == "bad value"


def test_invalid_workflow_result(executor):
    got = []
    r = executor.run(wf({"x": {"type": "Nope"}}), on_event=got.append)
    assert r.status == "invalid"
    assert r.error["errors"][0]["code"] == "unknown_type" and r.error["errors"][0]["node_id"] == "x"
    assert len(got) == 1 and got[0].type == "run_failed" and got[0].errors


def test_interrupt_between_nodes(executor):
    stop = threading.Event()
    got = []

    def on_event(e):
        got.append(e)
        if e.type == "node_finished" and e.node_id == "d1":
            stop.set()  # e.g. the user pressed Cancel while d1 was running

    raw = wf({
        "c": {"type": "Const", "inputs": {"value": 1}},
        "d1": {"type": "Double", "inputs": {"x": ln("c", "value")}},
        "d2": {"type": "Double", "inputs": {"x": ln("d1", "value")}},
        "s": {"type": "Show", "inputs": {"value": ln("d2", "value")}},
    })
    r = executor.run(raw, interrupt=stop, on_event=on_event)
    assert r.status == "interrupted"
    assert CALLS == {"Const": 1, "Double": 1}
    assert got[-1].type == "run_interrupted"
    assert r.error["error_type"] == "Interrupted"
    # next run continues from the cache
    CALLS.clear()
    r2 = executor.run(raw)
    assert r2.status == "success" and CALLS == {"Double": 1, "Show": 1}


def test_interrupt_inside_a_node_at_a_progress_point(executor):
    stop = threading.Event()
    raw = wf({
        "c": {"type": "Const", "inputs": {"value": 1}},
        "w": {"type": "Slow", "inputs": {"x": ln("c", "value"), "steps": 10, "stop_at": 3}},
        "s": {"type": "Show", "inputs": {"value": ln("w", "value")}},
    })
    got = []
    r = executor.run(raw, interrupt=stop, on_event=got.append)
    assert r.status == "interrupted"
    assert tn.SEEN["slow_steps"] == [0, 1, 2, 3]  # stopped at its first progress point after the request
    assert r.nodes["w"].status == "interrupted"
    assert got[-1].type == "run_interrupted" and got[-1].node_id == "w" and got[-1].node_type == "Slow"
    assert r.nodes["s"].status == "pending" and CALLS["Show"] == 0


def test_interrupt_from_another_thread(executor):
    stop = threading.Event()
    tn.SEEN["wait_started"] = threading.Event()
    tn.SEEN["wait_release"] = threading.Event()
    raw = wf({
        "c": {"type": "Const", "inputs": {"value": 1}},
        "w": {"type": "Wait", "inputs": {"x": ln("c", "value")}},
        "s": {"type": "Show", "inputs": {"value": ln("w", "value")}},
    })
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", executor.run(raw, interrupt=stop)))
    t.start()
    assert tn.SEEN["wait_started"].wait(10)
    stop.set()
    tn.SEEN["wait_release"].set()
    t.join(10)
    assert out["r"].status == "interrupted" and out["r"].error["node_id"] == "w"
    assert CALLS["Show"] == 0


def test_ten_thousand_node_chain_runs_without_recursion(executor):
    n = 10_000
    nodes = {"n0": {"type": "Const", "inputs": {"value": 0}}}
    for i in range(1, n):
        nodes[f"n{i}"] = {"type": "Add", "inputs": {"a": ln(f"n{i - 1}", "value"), "b": 1}}
    nodes["s"] = {"type": "Show", "inputs": {"value": ln(f"n{n - 1}", "value")}}
    r = executor.run(wf(nodes))
    assert r.status == "success", r.error
    assert value(executor, r, "s") == n - 1
    CALLS.clear()
    r = executor.run(wf(nodes))
    assert sum(CALLS.values()) == 0 and value(executor, r, "s") == n - 1


def test_run_json_shape(executor, settings):
    r = executor.run(pipeline())
    doc = r.to_json(settings)
    assert doc["status"] == "success" and doc["error"] is None and doc["outputs"] == {}
    assert set(doc["nodes"]["s"]) == {"status", "cached", "seconds"}


def test_run_accepts_a_prevalidated_graph_and_targets(executor, settings):
    graph, _ = validate(pipeline(), executor.registry, settings, targets=["d1"])
    r = executor.run(graph)
    assert set(r.nodes) == {"c1", "d1"} and value(executor, r, "d1") == 4
    r = executor.run(pipeline(), targets=["d2"])
    assert set(r.nodes) == {"c2", "d2"}


def test_one_run_at_a_time(executor):
    tn.SEEN["wait_started"] = threading.Event()
    tn.SEEN["wait_release"] = threading.Event()
    slow = wf({"c": {"type": "Const", "inputs": {"value": 1}}, "w": {"type": "Wait", "inputs": {"x": ln("c", "value")}},
               "s": {"type": "Show", "inputs": {"value": ln("w", "value")}}})
    t = threading.Thread(target=executor.run, args=(slow,))
    t.start()
    assert tn.SEEN["wait_started"].wait(10)
    done = threading.Event()
    t2 = threading.Thread(target=lambda: (executor.run(pipeline()), done.set()))
    t2.start()
    time.sleep(0.2)
    assert not done.is_set()  # waits for the first run
    tn.SEEN["wait_release"].set()
    t.join(10)
    t2.join(10)
    assert done.is_set()
