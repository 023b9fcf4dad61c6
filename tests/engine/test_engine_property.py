"""Property: random graphs and random JSON either validate or give structured errors, never an exception;
and a graph that validates runs without the engine raising (a node's own error is a RunFailed result)."""

import random
import threading

from hypothesis import HealthCheck, event, given, settings as hsettings, strategies as st

import loomtest_nodes as tn
from engine.cache import OutputCache
from engine.executor import Executor
from engine.graph import Graph, GraphError, validate
from engine.registry import Registry
from engine.settings import Settings

# nodes that touch the file system or block are left out; the rest cover links, literals, types, loops
SAFE = [tn.const, tn.add, tn.double, tn.half, tn.text, tn.split, tn.pick, tn.colour, tn.make_base, tn.make_subsub,
        tn.use_sub, tn.passthrough, tn.fail, tn.random_int, tn.slow, tn.show, tn.accumulate]
REG = Registry(SAFE)
TYPES = REG.names() + ["Nope", "LoopInput", "LoopOutput"]
IDS = ["n0", "n1", "n2", "n3", "b0", "in"]
OUTPUTS = sorted({o.name for d in REG for o in d.outputs} | {"nothing"})
INPUTS = sorted({i for d in REG for i in d.inputs} | {"bogus"})
SETTINGS = Settings(input_dir="/nonexistent/input", output_dir="/nonexistent/output")

# lone surrogates: legal in JSON ("\ud800"), so json.loads gives them to the engine
surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)
garbage = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | surrogates,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
literal = (st.integers(min_value=-5, max_value=120) | st.floats(min_value=-1, max_value=2) | st.booleans()
           | st.sampled_from(["a", "b", "z", "red", "blue", "node", "false", "3", ""]) | garbage)
link = st.builds(lambda n, o: {"node": n, "output": o}, st.sampled_from(IDS + ["ghost"]), st.sampled_from(OUTPUTS + ["value", "value"]))
input_value = st.one_of(link, link, literal, st.builds(lambda v: {"value": v}, garbage),
                        st.fixed_dictionaries({"node": garbage, "output": garbage}))



def _literal_for(spec, sane: bool):
    """A well-typed literal for an input; when not `sane`, maybe out of range, not a choice, or garbage."""
    name = spec.type.name
    if spec.static_choices:
        return st.sampled_from(list(spec.static_choices) + ([] if sane else ["zz"]))
    if spec.choices is not None:
        return st.sampled_from(["red", "green", "blue"] + ([] if sane else ["purple"]))
    if name == "INT":
        return st.integers(0, 12) if sane else st.integers(-3, 120)
    if name == "FLOAT":
        return (st.floats(0, 1) | st.integers(0, 1)) if sane else st.floats(-0.5, 1.5) | garbage
    if name == "BOOLEAN":
        return st.booleans() if sane else st.booleans() | garbage
    if name == "STRING":
        return st.text(max_size=6) | surrogates
    if sane:  # ANY: any JSON value, objects wrapped as the format says
        return garbage.map(lambda v: {"value": v} if isinstance(v, dict) else v)
    return garbage


@st.composite
def graph_nodes(draw, prefix="n", outer=(), depth=1, min_size=1, max_size=7):
    """A node dict built type-aware (links mostly to compatible earlier outputs), then lightly corrupted."""
    from engine.types import can_connect

    rnd = random.Random(draw(st.integers(0, 2**32)))  # uniform odds for structural choices (hypothesis favours 0)
    defs = [d for d in REG if depth > 0 or d.loop is None]
    defs += [d for d in defs if d.loop is not None] * 3  # loops more often: they have the most engine code
    available = list(outer)  # (node id, output name, type name)
    nodes = {}
    count = rnd.randint(min_size, max_size)
    for i in range(count):
        nid = f"{prefix}{i}"
        d = rnd.choice(defs)
        inputs = {}
        for spec in d.inputs.values():
            roll = rnd.randrange(60)
            if roll == 0 and not spec.required:
                continue
            if roll == 1:
                inputs[spec.name] = draw(input_value)  # anything at all
                continue
            compatible = [(n, o) for n, o, t in available if can_connect(t, spec.type.name)]
            if compatible and (spec.link_only or roll < 30):
                n, o = rnd.choice(compatible)
                inputs[spec.name] = {"node": n, "output": o}
            elif spec.link_only:
                # nothing compatible yet: link forward (may be a cycle or a mismatch) or leave it missing
                if rnd.random() < 0.5:
                    inputs[spec.name] = {"node": f"{prefix}{rnd.randint(0, max_size)}", "output": "value"}
            else:
                inputs[spec.name] = draw(_literal_for(spec, sane=roll < 55))
        if rnd.randrange(60) == 0:
            inputs[rnd.choice(INPUTS)] = draw(input_value)
        entry = {"type": d.name, "inputs": inputs}
        if rnd.randrange(25) == 0:
            entry["mode"] = "bypass"
        if d.loop is not None and rnd.random() < 0.7:
            entry["body"] = draw(loop_bodies(available, depth - 1))
        nodes[nid] = entry
        available += [(nid, o.name, o.type.name) for o in d.outputs]
    return nodes


@st.composite
def loop_bodies(draw, outer, depth):
    loop_in = [("in", "value", "INT"), ("in", "step", "INT")]
    inner = draw(graph_nodes(prefix="b", outer=list(outer) + loop_in, depth=depth, min_size=0, max_size=3))
    sources = loop_in + [(n, "value", "INT") for n, e in inner.items() if e["type"] in ("Const", "Add", "Double", "Slow")]
    src = random.Random(draw(st.integers(0, 2**32))).choice(sources)
    return {"nodes": {"in": {"type": "LoopInput"}, **inner,
                      "out": {"type": "LoopOutput", "inputs": {"value": {"node": src[0], "output": src[1]}}}}}


@st.composite
def workflows(draw):
    rnd = random.Random(draw(st.integers(0, 2**32)))
    nodes = draw(graph_nodes())
    last = list(nodes)[-1]
    d = REG.get(nodes[last]["type"])
    if d.outputs and rnd.random() < 0.95:
        nodes["show"] = {"type": "Show", "inputs": {"value": {"node": last, "output": d.outputs[0].name}}}
    raw = {"format": "latentloom.workflow", "version": 1, "nodes": nodes}
    corruption = rnd.randrange(20)
    if corruption == 0:  # garbage in place of a node
        nodes[rnd.choice(list(nodes))] = draw(garbage)
    elif corruption == 1:  # garbage in place of a field of a node
        entry = nodes[rnd.choice(list(nodes))]
        entry[rnd.choice(["type", "inputs", "mode", "body", "ui", "extra"])] = draw(garbage)
    elif corruption == 2:  # garbage in the envelope
        raw[rnd.choice(["format", "version", "nodes", "ui", "settings"])] = draw(garbage)
    return raw


envelope = workflows()  # plain garbage JSON: test_any_json_is_rejected_cleanly
targets = st.none() | st.none() | st.none() | st.lists(st.sampled_from(["n0", "n1", "n2", "show", "zz"]), max_size=2)

ENGINE_BUGS = {"KeyError", "AttributeError", "AssertionError", "RecursionError", "IndexError", "UnboundLocalError"}


def _check_errors(errors):
    assert errors and all(isinstance(e, GraphError) for e in errors)
    for e in errors:
        assert e.code and e.message
        assert e.node_id is None or isinstance(e.node_id, str)


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=envelope, wanted=targets)
def test_validate_never_raises_and_valid_graphs_run(raw, wanted):
    graph, errors = validate(raw, REG, SETTINGS, targets=wanted)
    event("valid" if graph is not None else "invalid: " + ",".join(sorted({e.code for e in errors})))
    if graph is None:
        _check_errors(errors)
        return
    assert isinstance(graph, Graph) and errors == []
    tn.reset()
    executor = Executor(REG, SETTINGS, OutputCache(1024 * 1024))
    for _ in range(2):  # a second run goes through the cache path
        result = executor.run(graph, interrupt=threading.Event())
        event(f"ran {'a loop' if any(graph.nodes[n].body for n in graph.order) else 'no loop'}: {result.status}")
        assert result.status in ("success", "error", "interrupted")
        if result.status == "error":
            assert result.error["node_id"] is not None and result.error["node_type"] is not None
            assert result.error["error_type"] not in ENGINE_BUGS, result.error


@hsettings(max_examples=100, deadline=None)
@given(raw=garbage)
def test_any_json_is_rejected_cleanly(raw):
    graph, errors = validate(raw, REG, SETTINGS)
    assert graph is None
    _check_errors(errors)
    result = Executor(REG, SETTINGS).run(raw)
    assert result.status == "invalid" and result.error["errors"]
