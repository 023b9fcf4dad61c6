"""Validation and planning: a raw workflow dict -> every error at once, or a `Graph` ready to run.

Validation never raises for bad input: it collects `GraphError`s `{node_id, input, code, message}`, so a
user fixes a file in one pass. Planning picks the nodes the requested outputs need, in topological
order (networkx, iterative: no recursion limit on deep chains).

Error codes: invalid_workflow, bad_node, unknown_type, unknown_input, missing_input, bad_link,
link_unknown_node, link_unknown_output, type_mismatch, link_required, invalid_literal, out_of_range,
not_in_choices, cycle, no_output, bypass_no_input, loop_body, unknown_output_node.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import networkx as nx
from pydantic import BaseModel

from .node import InputSpec, NodeDef, OutputSpec
from .registry import Registry
from .types import can_connect
from .workflow import WorkflowError, check_envelope, classify_input

LOOP_INPUT = "LoopInput"
LOOP_OUTPUT = "LoopOutput"


class GraphError(BaseModel):
    node_id: str | None = None
    input: str | None = None
    code: str
    message: str

    def __str__(self) -> str:
        where = ""
        if self.node_id is not None:
            where = f"node {self.node_id}"
            if self.input is not None:
                where += f", input {self.input}"
            where += ": "
        return f"{where}{self.message} [{self.code}]"


class InvalidWorkflow(Exception):
    def __init__(self, errors: list[GraphError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors[:5]) + (f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""))


@dataclass
class GNode:
    """One validated node: its definition, literal inputs, and links resolved through bypassed nodes."""

    id: str
    type: str
    d: NodeDef | None  # None for the loop boundary nodes
    literals: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # input -> (source id, output name)
    bypass: bool = False
    body: "Body | None" = None
    outputs: list[OutputSpec] = field(default_factory=list)


@dataclass
class Body:
    """A loop node's body: its nodes, the order to run the ones LoopOutput needs, and outer dependencies."""

    nodes: dict[str, GNode]
    order: list[str]
    output_id: str
    outer_deps: set[str]


@dataclass
class Graph:
    nodes: dict[str, GNode]
    order: list[str]  # what the requested outputs need, topologically sorted
    targets: list[str]
    raw: dict


# ----------------------------------------------------------------------------------------------------


class _Scope:
    """The nodes visible from a graph level: its own, then (for a loop body) the enclosing graph's."""

    def __init__(self, nodes: dict[str, GNode], parent: "_Scope | None" = None, prefix: str = ""):
        self.nodes = nodes
        self.parent = parent
        self.prefix = prefix

    def find(self, node_id: str) -> tuple[GNode | None, bool]:
        if node_id in self.nodes:
            return self.nodes[node_id], True
        if self.parent is not None:
            found, _ = self.parent.find(node_id)
            return found, False
        return None, False


def _outputs_of(d: NodeDef) -> list[OutputSpec]:
    return d.outputs


_NODE_FIELDS = frozenset({"type", "inputs", "ui", "mode", "body"})


def _first_pass(raw_nodes: dict, registry: Registry, errors: list[GraphError], prefix: str,
                loop_owner: NodeDef | None) -> dict[str, GNode]:
    """Create GNodes for each entry whose type is known; record structural errors."""
    nodes: dict[str, GNode] = {}
    get_def = registry.get
    for nid, entry in raw_nodes.items():
        if not isinstance(nid, str):  # JSON keys are strings; a Python caller may pass others
            errors.append(GraphError(node_id=prefix + str(nid), code="bad_node", message=f"a node id must be a string, got {type(nid).__name__}"))
            continue
        if not isinstance(entry, dict):
            errors.append(GraphError(node_id=prefix + nid, code="bad_node", message=f"a node must be an object, got {type(entry).__name__}"))
            continue
        if not _NODE_FIELDS.issuperset(entry):
            errors.append(GraphError(node_id=prefix + nid, code="bad_node", message=f"unknown node fields {sorted(map(str, set(entry) - _NODE_FIELDS))}"))
        ntype = entry.get("type")
        if not isinstance(ntype, str):
            errors.append(GraphError(node_id=prefix + nid, code="bad_node", message=f"'type' must be a string, got {ntype!r}"))
            continue
        mode = entry.get("mode", "normal")
        if mode != "normal" and mode != "bypass":
            errors.append(GraphError(node_id=prefix + nid, code="bad_node", message=f"'mode' must be 'normal' or 'bypass', got {mode!r}"))
        if "inputs" in entry and not isinstance(entry["inputs"], dict):
            errors.append(GraphError(node_id=prefix + nid, code="bad_node", message="'inputs' must be an object"))
            continue
        if loop_owner is not None and (ntype == LOOP_INPUT or ntype == LOOP_OUTPUT):
            spec = loop_owner.loop
            assert spec is not None
            outs = spec.inputs if ntype == LOOP_INPUT else []
            nodes[nid] = GNode(nid, ntype, None, {}, {}, False, None, outs)
            continue
        d = get_def(ntype)
        if d is None:
            hint = ""
            if ntype in (LOOP_INPUT, LOOP_OUTPUT):
                hint = " (LoopInput/LoopOutput exist only inside a loop node's body)"
            errors.append(GraphError(node_id=prefix + nid, code="unknown_type", message=f"unknown node type {ntype!r}{hint}"))
            continue
        nodes[nid] = GNode(nid, d.name, d, {}, {}, mode == "bypass", None, d.outputs)
    return nodes


def _input_specs(g: GNode, loop_owner: NodeDef | None) -> dict[str, InputSpec]:
    if g.d is not None:
        return g.d.inputs
    if g.type == LOOP_OUTPUT and loop_owner is not None and loop_owner.loop is not None:
        return {s.name: s for s in loop_owner.loop.outputs}
    return {}


def _second_pass(raw_nodes: dict, scope: _Scope, registry: Registry, errors: list[GraphError], settings: Any,
                 loop_owner: NodeDef | None) -> None:
    """Check every input of every known node: links (target, output, type) and literals (type, range)."""
    prefix = scope.prefix
    local_nodes = scope.nodes
    for nid, g in local_nodes.items():
        entry = raw_nodes[nid]
        specs = _input_specs(g, loop_owner)
        given = entry.get("inputs") or {}
        links, literals = g.links, g.literals
        for iname, raw in given.items():
            spec = specs.get(iname)
            if spec is None:
                errors.append(GraphError(node_id=prefix + nid, input=str(iname), code="unknown_input",
                                         message=f"{g.type} has no input {iname!r} (inputs: {sorted(specs)})"))
                continue
            if isinstance(raw, dict):
                kind, value = classify_input(raw)
            else:  # the common case: a plain literal
                kind, value = "literal", raw
            if kind == "link":
                src_id, out_name = value
                src = local_nodes.get(src_id)
                if src is None:
                    src, _ = scope.find(src_id)
                    if src is None:
                        errors.append(GraphError(node_id=prefix + nid, input=iname, code="link_unknown_node",
                                                 message=f"links to node {src_id!r}, which does not exist"))
                        continue
                out = None
                for o in src.outputs:
                    if o.name == out_name:
                        out = o
                        break
                if out is None:
                    errors.append(GraphError(node_id=prefix + nid, input=iname, code="link_unknown_output",
                                             message=f"node {src_id!r} ({src.type}) has no output {out_name!r} "
                                                     f"(outputs: {[o.name for o in src.outputs]})"))
                    continue
                if out.type is not spec.type and not can_connect(out.type.name, spec.type.name):
                    errors.append(GraphError(node_id=prefix + nid, input=iname, code="type_mismatch",
                                             message=f"expects {spec.type.name}, but {src_id}.{out_name} gives {out.type.name}"))
                    continue
                links[iname] = value
            elif kind == "literal":
                problem = spec.validate_literal(value, settings)
                if problem is not None:
                    errors.append(GraphError(node_id=prefix + nid, input=iname, code=problem[0], message=problem[1]))
                    continue
                literals[iname] = value
            else:
                errors.append(GraphError(node_id=prefix + nid, input=iname, code="bad_link", message=value))
        if len(given) != len(specs) or not all(i in given for i in specs):
            for iname, spec in specs.items():
                if iname not in given:
                    if spec.required:
                        errors.append(GraphError(node_id=prefix + nid, input=iname, code="missing_input",
                                                 message=f"required input {iname!r} ({spec.type.name}) is missing"))
                    elif not spec.link_only:
                        literals[iname] = spec.default
        if g.d is not None and g.d.loop is not None:
            body_raw = entry.get("body")
            if body_raw is None:
                body_raw = g.d.loop.default_body
            g.body = _compile_body(g, body_raw, scope, registry, errors, settings)


def _compile_body(owner: GNode, body_raw: Any, outer: _Scope, registry: Registry, errors: list[GraphError],
                  settings: Any) -> Body | None:
    pid = outer.prefix + owner.id
    if not isinstance(body_raw, dict) or not isinstance(body_raw.get("nodes"), dict):
        errors.append(GraphError(node_id=pid, code="loop_body", message="a loop body must be an object with 'nodes'"))
        return None
    raw_nodes = body_raw["nodes"]
    before = len(errors)
    nodes = _first_pass(raw_nodes, registry, errors, pid + "/", owner.d)
    scope = _Scope(nodes, outer, pid + "/")
    _second_pass(raw_nodes, scope, registry, errors, settings, owner.d)
    outs = [n for n in nodes.values() if n.type == LOOP_OUTPUT]
    if len(outs) != 1:
        errors.append(GraphError(node_id=pid, code="loop_body",
                                 message=f"a loop body needs exactly one {LOOP_OUTPUT} node, found {len(outs)}"))
        return None
    if len(errors) > before:
        return None
    outer_deps: set[str] = set()
    deps: dict[str, dict[str, None]] = {}
    for n in nodes.values():
        # a nested loop's body may read nodes of this body or of the graphs around it
        srcs = [src for src, _ in n.links.values()] + (sorted(n.body.outer_deps) if n.body is not None else [])
        mine = deps[n.id] = {}
        for src in srcs:
            if src in nodes:
                mine[src] = None
            else:
                outer_deps.add(src)
    topo = _topological(nodes, deps, pid + "/", errors)
    if topo is None:
        return None
    _resolve_bypass(nodes, errors, pid + "/")
    needed = _ancestors_and_self(_after_bypass(nodes, deps), [outs[0].id])
    order = [n for n in topo if n in needed and not nodes[n].bypass]
    return Body(nodes=nodes, order=order, output_id=outs[0].id, outer_deps=outer_deps)


def _topological(nodes: dict[str, GNode], deps: dict[str, dict[str, None]], prefix: str,
                 errors: list[GraphError]) -> list[str] | None:
    """All nodes in topological order, or None with a `cycle` error naming the nodes on one cycle.

    Kahn's algorithm, generation by generation: the order networkx's `topological_sort` gives, without
    building a networkx graph (that was half the cost of validating a long chain). Iterative and linear.
    networkx names the nodes of a cycle when there is one.
    """
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    indegree: dict[str, int] = {}
    for v, srcs in deps.items():
        indegree[v] = len(srcs)
        for u in srcs:
            succ[u].append(v)
    order = [n for n in nodes if not indegree.get(n)]
    i = 0
    while i < len(order):  # the list is also the queue
        for v in succ[order[i]]:
            left = indegree[v] - 1
            indegree[v] = left
            if left == 0:
                order.append(v)
        i += 1
    if len(order) == len(nodes):
        return order
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from((u, v) for v, srcs in deps.items() for u in srcs)
    cyc = _cycle_error(g, prefix)
    if cyc is not None:
        errors.append(cyc)
    return None


def _after_bypass(nodes: dict[str, GNode], deps: dict[str, dict[str, None]]) -> dict[str, dict[str, None]]:
    """The dependencies once links are rewired around bypassed nodes: an input of a bypassed node that is
    not passed through is not needed, so what feeds only it does not run."""
    if not any(n.bypass for n in nodes.values()):
        return deps
    out: dict[str, dict[str, None]] = {}
    for n in nodes.values():
        if n.bypass:
            continue
        mine = out[n.id] = {src: None for src, _ in n.links.values() if src in nodes}
        if n.body is not None:
            mine.update((src, None) for src in sorted(n.body.outer_deps) if src in nodes)
    return out


def _ancestors_and_self(deps: dict[str, dict[str, None]], wanted: Iterable[str]) -> set:
    """Every node the `wanted` ones depend on, and themselves: one walk, however many targets."""
    needed = set(wanted)
    stack = list(needed)
    while stack:
        for p in deps.get(stack.pop(), ()):
            if p not in needed:
                needed.add(p)
                stack.append(p)
    return needed


def _cycle_error(g: nx.DiGraph, prefix: str) -> GraphError | None:
    try:
        cycle = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    on_cycle = [prefix + str(u) for u, _ in cycle]
    return GraphError(node_id=on_cycle[0], code="cycle", message=f"the graph has a cycle: {' -> '.join(on_cycle + on_cycle[:1])}")


def _through(nodes: Mapping[str, GNode], src: str, out: str) -> tuple[str, str] | None:
    """Where a link from bypassed node `src` really comes from: its input of a matching type, followed through
    chains of bypassed nodes; None when there is none (or the chain loops)."""
    seen = set()
    while src in nodes and nodes[src].bypass:
        if src in seen:
            return None
        seen.add(src)
        b = nodes[src]
        otype = next((o.type.name for o in b.outputs if o.name == out), None)
        match = None
        for iname, (s, o) in b.links.items():
            s_node = nodes.get(s)
            s_type = next((x.type.name for x in s_node.outputs if x.name == o), None) if s_node else None
            if s_type is not None and otype is not None and can_connect(s_type, otype):
                match = (s, o)
                break
        if match is None:
            return None
        src, out = match
    return src, out


def _rewire(n: GNode, nodes: Mapping[str, GNode], errors: list[GraphError], prefix: str,
            local: Mapping[str, GNode] | None = None) -> None:
    """Point `n`'s links that leave a bypassed node of `nodes` at what passes through it (links to `local` ids,
    a body's own nodes, shadow the graph around it and are left alone)."""
    for iname, (src, out) in list(n.links.items()):
        if local is not None and src in local:
            continue
        if src in nodes and nodes[src].bypass:
            target = _through(nodes, src, out)
            if target is None:
                errors.append(GraphError(node_id=prefix + n.id, input=iname, code="bypass_no_input",
                                         message=f"node {src!r} is bypassed but has no input of the type of its output {out!r} to pass through"))
            else:
                n.links[iname] = target


def _rewire_body(body: Body, outer: Mapping[str, GNode], errors: list[GraphError], prefix: str,
                 shadow: Mapping[str, GNode] | None = None) -> None:
    """A loop body's links to bypassed nodes of a graph around it, rewired as that graph's own links are (nested
    bodies too; the ids of the bodies in between shadow the outer graph's); the body's outer dependencies follow."""
    local = ChainMap(body.nodes, shadow) if shadow is not None else body.nodes
    for bn in body.nodes.values():
        _rewire(bn, outer, errors, prefix, local=local)
        if bn.body is not None:
            _rewire_body(bn.body, outer, errors, prefix + bn.id + "/", local)
    deps: set[str] = set()
    for bn in body.nodes.values():
        deps.update(src for src, _ in bn.links.values() if src not in body.nodes)
        if bn.body is not None:
            deps.update(src for src in bn.body.outer_deps if src not in body.nodes)
    body.outer_deps = deps


def _resolve_bypass(nodes: dict[str, GNode], errors: list[GraphError], prefix: str) -> None:
    """Rewire links that leave a bypassed node to that node's input of a matching type (ComfyUI's bypass), in
    this graph and in the loop bodies inside it that read its nodes."""
    if not any(n.bypass for n in nodes.values()):
        return
    for n in nodes.values():
        _rewire(n, nodes, errors, prefix)
        if n.body is not None:
            _rewire_body(n.body, nodes, errors, prefix + n.id + "/")


def validate(raw: Any, registry: Registry, settings: Any = None, targets: Iterable[str] | None = None) -> tuple[Graph | None, list[GraphError]]:
    """Validate a raw workflow dict; returns (Graph, []) or (None, errors). Never raises on bad input."""
    try:
        data = check_envelope(raw)
    except WorkflowError as exc:
        return None, [GraphError(code="invalid_workflow", message=str(exc))]
    errors: list[GraphError] = []
    raw_nodes = data["nodes"]
    nodes = _first_pass(raw_nodes, registry, errors, "", None)
    scope = _Scope(nodes)
    _second_pass(raw_nodes, scope, registry, errors, settings, None)

    deps: dict[str, dict[str, None]] = {}
    for n in nodes.values():
        mine = deps[n.id] = {}
        for src, _ in n.links.values():
            if src in nodes:
                mine[src] = None
        if n.body is not None:
            for src in sorted(n.body.outer_deps):
                if src in nodes:
                    mine[src] = None
    topo = _topological(nodes, deps, "", errors)
    if not errors:
        _resolve_bypass(nodes, errors, "")

    if targets is not None:
        wanted = [str(t) for t in targets]
        for t in wanted:
            if t not in raw_nodes:
                errors.append(GraphError(node_id=t, code="unknown_output_node", message=f"requested output node {t!r} does not exist"))
    else:
        wanted = [nid for nid, n in nodes.items() if n.d is not None and n.d.output_node and not n.bypass]
        if not wanted and not any(e.code == "unknown_type" for e in errors):
            errors.append(GraphError(code="no_output", message="the workflow has no output node (e.g. SaveImage or PreviewImage): nothing would run"))
    if errors or topo is None:
        return None, errors
    needed = _ancestors_and_self(_after_bypass(nodes, deps), wanted)
    order = [n for n in topo if n in needed and not nodes[n].bypass]
    return Graph(nodes=nodes, order=order, targets=wanted, raw=data), []


def validate_or_raise(raw: Any, registry: Registry, settings: Any = None, targets: Iterable[str] | None = None) -> Graph:
    graph, errors = validate(raw, registry, settings, targets)
    if graph is None:
        raise InvalidWorkflow(errors)
    return graph
