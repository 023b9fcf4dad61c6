"""ComfyUI's editor (LiteGraph) workflows -> the API prompt ComfyUI's frontend would send for them.

The editor saves `{nodes: [{id, type, inputs, widgets_values}], links: [[id, from, from_slot, to, to_slot, type]]}`,
whose widget values are positional. Each table entry of `engine.compat.comfy` records ComfyUI's widget order
(`ComfyClass.widgets`), so `litegraph_to_prompt` rebuilds the prompt ComfyUI's own frontend would send (Reroutes
followed, PrimitiveNodes inlined, muted nodes left out), and that prompt then takes the same translation as any
other. These names are importable from `engine.compat.comfy` as well.

Subgraphs and legacy group nodes are inlined first (`flatten`), as ComfyUI's `graphToPrompt` expands them:

- A subgraph (frontend 1.24+) is defined once in `definitions.subgraphs[]` (nested ones may also sit in a definition's
  own `definitions.subgraphs`): `{id, name, inputs: [{name, type, linkIds}], outputs: [...], nodes, links}`, its links
  objects `{id, origin_id, origin_slot, target_id, target_slot, type}`. Node -10 is the subgraph's input node (a link
  from its slot k is the instance's input k), node -20 its output node (the link into its slot k feeds output k). An
  instance is a node whose `type` is the definition's id; its inner nodes become `"<instance id>:<inner id>"` (nested:
  `"7:12:3"`, ComfyUI's own execution ids). An instance input with a `widget` is a promoted widget: left unlinked, its
  value (the instance's `widgets_values`, one per promoted input in input order) goes to the inner inputs it feeds.
  Files of late 2025 order those values by `properties.proxyWidgets = [[inner node id or "-1", widget name], ...]`
  instead, "-1" naming the instance's promoted input and any other id an inner node's widget.
- A legacy group node (`extra.groupNodes[name] = {nodes, links: [[from index, from slot, to index, to slot, ...]],
  external, config}`, instances typed `workflow>name`, older `workflow/name`) has ComfyUI's group-node layout: its
  inputs are the inner sockets left unlinked inside (then the widgets converted to inputs), its outputs the inner
  outputs not used inside (or listed in `external`), its `widgets_values` the inner widgets in order. Its inner nodes
  become `"<instance id>:<index>"`.

A muted instance is left out with everything inside it, a bypassed one too, its links passed through by type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .comfy import (CONTROL_AFTER_GENERATE, CONTROL_VALUES, UPLOAD, ComfyClass, ComfyTranslationError, _ensure_tables, _spec_of,
                    _unsupported, prompt_to_workflow)

REROUTE = "Reroute"  # frontend-only: a link passes through it
PRIMITIVE = "PrimitiveNode"  # frontend-only: its value becomes the literal of the widget inputs it feeds
UI_ONLY = frozenset({"Note", "MarkdownNote"})  # frontend-only, nothing to run
MODE_MUTED, MODE_BYPASS = 2, 4  # LiteGraph node modes ComfyUI gives a meaning ("never", "bypass")

SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = "-10", "-20"  # the ids of a subgraph's input and output nodes
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")  # group node types: frontend 1.2.63+, before
_SUBGRAPH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_LEGACY_PROXY_NAME = re.compile(r"^\s*\d+\s*:\s*(.+)$")  # "12: seed", as some proxyWidgets entries name the widget
LABEL = "_loom_label"  # on the stand-in of a muted or bypassed instance: what it is, for messages
WIDGETS = "_loom_widgets"  # on an inlined node: widget values its instance gives it, by name


def is_litegraph_workflow(data: Any) -> bool:
    """ComfyUI's editor format: `{nodes: [...], links: [...]}` (ours has `format` and a `nodes` object)."""
    return isinstance(data, dict) and "format" not in data and isinstance(data.get("nodes"), list)


def _slot(value: Any) -> Any:
    try:  # ComfyUI sends parseInt(origin_slot)
        return int(value)
    except (TypeError, ValueError):
        return value


def _link_rows(links: Any) -> dict[str, tuple[str, Any, str, Any]]:
    """link id -> (origin node id, origin slot, target node id, target slot), from `[id, from, from_slot, to, to_slot,
    type]` arrays or the `{id, origin_id, origin_slot, ...}` objects of the newer schema (a list, or an object by id)."""
    rows: dict[str, tuple[str, Any, str, Any]] = {}
    for link in (links.values() if isinstance(links, dict) else links) or []:
        if isinstance(link, list) and len(link) >= 5:
            link_id, origin, slot, target, target_slot = link[:5]
        elif isinstance(link, dict) and "id" in link:
            link_id, origin, slot = link["id"], link.get("origin_id"), link.get("origin_slot")
            target, target_slot = link.get("target_id"), link.get("target_slot")
        else:
            continue
        rows[str(link_id)] = (str(origin), _slot(slot), str(target), _slot(target_slot))
    return rows


def _position(pos: Any) -> list[float] | None:
    if isinstance(pos, dict):  # older files: {"0": x, "1": y}
        pos = [pos.get("0"), pos.get("1")]
    if isinstance(pos, (list, tuple)) and len(pos) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pos[:2]):
        return [pos[0], pos[1]]
    return None


def _input_name(inp: dict) -> Any:
    widget = inp.get("widget")
    return widget["name"] if isinstance(widget, dict) and widget.get("name") else inp.get("name")


def _dicts(value: Any) -> list[dict]:
    """A saved list of slots, each entry an object (anything else as an empty one, so indexes stay)."""
    return [v if isinstance(v, dict) else {} for v in value] if isinstance(value, list) else []


def _widget_inputs(nid: str, class_type: str, spec: ComfyClass, values: Any, warnings: list[str]) -> dict[str, Any]:
    """`widgets_values` by ComfyUI's widget order (a list), or by name (an object, as newer frontends may save)."""
    inputs: dict[str, Any] = {}
    if values is None:
        return inputs
    if isinstance(values, dict):
        for name, value in values.items():
            if name in (CONTROL_AFTER_GENERATE, UPLOAD):
                continue
            if spec.widgets and name not in spec.widgets:
                warnings.append(f"node {nid} ({class_type}): widget {name!r} is not one of ComfyUI's {class_type} widgets; ignored")
                continue
            inputs[name] = value
        return inputs
    if not isinstance(values, list):
        raise ComfyTranslationError(nid, "'widgets_values' must be a list or an object")
    i = 0
    for name in spec.widgets:
        if i >= len(values):
            break
        if name == CONTROL_AFTER_GENERATE:
            if isinstance(values[i], str) and values[i] in CONTROL_VALUES:  # files from before the control widget have none
                i += 1
            continue
        if name != UPLOAD:
            inputs[name] = values[i]
        i += 1
    extra = [v for v in values[i:] if not (isinstance(v, str) and v in CONTROL_VALUES)]  # a seed control we did not expect
    if extra:
        known = [w for w in spec.widgets if w not in (CONTROL_AFTER_GENERATE, UPLOAD)]
        warnings.append(f"node {nid} ({class_type}): {len(extra)} widget value(s) more than ComfyUI's {class_type} has "
                        f"widgets ({', '.join(known) or 'none'}); ignored: {extra!r}")
    return inputs


def _has_control(spec: ComfyClass | None, widget: str) -> bool:
    """Whether ComfyUI's editor puts a control_after_generate widget after this one (a seed's)."""
    if spec is None or widget not in spec.widgets:
        return False
    i = spec.widgets.index(widget)
    return i + 1 < len(spec.widgets) and spec.widgets[i + 1] == CONTROL_AFTER_GENERATE


# -- subgraphs and group nodes inlined ------------------------------------------------------------------------------
# The link table `flatten` builds maps a link key (the link id at the top; "<instance id>:<link id>" inside an
# instance) to its origin (node id, slot), or to one of these where a link crosses an instance's boundary.

@dataclass(frozen=True)
class Via:
    """The link goes on as another link: an instance's input or output crossed."""

    key: str


@dataclass(frozen=True)
class WidgetValue:
    """A promoted widget left unlinked on its instance: its value, sent instead of a link."""

    value: Any


@dataclass(frozen=True)
class SameAs:
    """A promoted widget with no value on its instance: ComfyUI sends the value of the first inner widget it feeds."""

    node: str
    widget: str


@dataclass(frozen=True)
class Unlinked:
    """Nothing feeds it: ComfyUI sends no link (a widget's own value stands), with a warning where that is odd."""

    warning: str | None = None


@dataclass(frozen=True)
class Broken:
    """A link ComfyUI cannot resolve (to an inner node or link that does not exist): an error once an input uses it."""

    message: str


@dataclass
class Flat:
    nodes: dict[str, dict] = field(default_factory=dict)  # node id -> node as saved (inlined ones: a copy, re-keyed)
    links: dict[str, Any] = field(default_factory=dict)  # link key -> (node id, slot) | Via | WidgetValue | SameAs | ...


@dataclass
class _Scope:
    prefix: str = ""  # "" at the top, "<instance id>:" inside an instance
    instance: str | None = None  # the instance's node id
    what: str = ""  # "subgraph 'Name'", for messages
    boundary: list = field(default_factory=list)  # link-table entries of the instance's inputs, by subgraph input index
    chain: tuple[tuple[str, str], ...] = ()  # (subgraph id, name) from the top: a subgraph inside itself is refused
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # inner node id (or path) -> widget -> value
    anchor: list[float] | None = None  # the instance's position: inner nodes are placed from it


def _proxy_widgets(node: dict) -> list[tuple[str, str]] | None:
    """`properties.proxyWidgets` (a list, or that list as JSON): (inner node id or "-1", widget name) per promoted widget."""
    props = node.get("properties")
    entries = props.get("proxyWidgets") if isinstance(props, dict) else None
    if isinstance(entries, str):
        try:
            entries = json.loads(entries)
        except ValueError:
            return None
    if not isinstance(entries, list) or not entries:
        return None
    out = []
    for e in entries:
        if not isinstance(e, (list, tuple)) or len(e) < 2 or not isinstance(e[1], str):
            return None
        name = e[1]
        while (m := _LEGACY_PROXY_NAME.match(name)) is not None:
            name = m.group(1)
        out.append((str(e[0]), name))
    return out


class _Flattener:
    def __init__(self, workflow: dict, registry: Any):
        self.registry = registry
        self.defs: dict[str, dict] = {}
        self._collect(workflow)
        extra = workflow.get("extra")
        groups = extra.get("groupNodes") if isinstance(extra, dict) else None
        self.groups: dict[str, Any] = groups if isinstance(groups, dict) else {}
        self.flat = Flat()

    def _collect(self, graph: dict) -> None:
        defs = graph.get("definitions")
        subgraphs = defs.get("subgraphs") if isinstance(defs, dict) else None
        for sg in subgraphs if isinstance(subgraphs, list) else []:
            if isinstance(sg, dict) and sg.get("id") is not None and str(sg["id"]) not in self.defs:
                self.defs[str(sg["id"])] = sg
                self._collect(sg)

    def spec(self, class_type: Any) -> ComfyClass | None:
        return _spec_of(class_type, self.registry)

    # what a node is: ("subgraph", definition, label) | ("group", definition, label) | None (an ordinary node)
    def kind(self, nid: str, t: Any) -> tuple[str, Any, str] | None:
        if not isinstance(t, str):
            return None
        if t in self.defs:
            return "subgraph", self.defs[t], f"subgraph {self.defs[t].get('name') or t!r}"
        name = next((t[len(p):] for p in GROUP_NODE_PREFIXES if t.startswith(p)), t if t in self.groups else None)
        if name is not None:
            if name not in self.groups:
                raise ComfyTranslationError(nid, f"this is the ComfyUI group node {t!r}, which cannot be imported: its definition is "
                                                 "missing from the workflow's extra.groupNodes; convert it to nodes in ComfyUI "
                                                 "(right-click > Convert to nodes) and save the workflow again")
            return "group", self.groups[name], f"group node {t!r}"
        if _SUBGRAPH_ID.match(t):
            raise ComfyTranslationError(nid, f"its type {t!r} is a subgraph id, but the workflow defines no such subgraph "
                                             "(definitions.subgraphs); save the workflow again in ComfyUI")
        return None

    def key(self, link: Any, scope: _Scope) -> str:
        """The table key of a link an input names in this scope (inside an instance, one the subgraph does not list is
        an error once used, as in ComfyUI)."""
        key = scope.prefix + str(link)
        if scope.instance is not None and key not in self.flat.links:
            self.flat.links[key] = Broken(f"names link {link}, which {scope.what} (node {scope.instance}) does not list")
        return key

    def place(self, pos: Any, scope: _Scope, corner: list[float] | None) -> Any:
        p = _position(pos)
        if p is None or scope.anchor is None or corner is None:
            return pos
        return [scope.anchor[0] + p[0] - corner[0], scope.anchor[1] + p[1] - corner[1]]

    def expand(self, nodes: Any, links: Any, scope: _Scope) -> None:
        local: dict[str, dict] = {}
        for n in nodes:
            if not isinstance(n, dict) or n.get("id") is None:
                raise ComfyTranslationError(scope.instance, f"{scope.what} has a node that is not an object with an 'id': {str(n)[:80]}")
            local[str(n["id"])] = n
        kinds = {lid: self.kind(scope.prefix + lid, n.get("type")) for lid, n in local.items()}
        if scope.instance is not None:
            for lid, k in kinds.items():
                if k is not None and k[0] == "group":
                    raise ComfyTranslationError(scope.prefix + lid, f"this is the ComfyUI {k[2]} inside {scope.what} (node "
                                                                    f"{scope.instance}), which ComfyUI does not run: convert it to nodes "
                                                                    "in ComfyUI (right-click > Convert to nodes) and save the workflow again")
        expanded = {lid for lid, k in kinds.items() if k is not None and local[lid].get("mode") not in (MODE_MUTED, MODE_BYPASS)}
        groups = {lid: self.group_layout(scope.prefix + lid, kinds[lid][1], kinds[lid][2]) for lid in expanded if kinds[lid][0] == "group"}
        outputs = {lid: (self.subgraph_outputs(scope.prefix + lid, kinds[lid][1], kinds[lid][2]) if kinds[lid][0] == "subgraph"
                         else [(f"{scope.prefix}{lid}:{i}", slot) for i, slot in groups[lid].outputs])
                   for lid in expanded}

        for lid, (origin, slot, _, _) in _link_rows(links).items():
            if scope.instance is not None and origin == SUBGRAPH_INPUT:
                if isinstance(slot, int) and 0 <= slot < len(scope.boundary):
                    entry: Any = scope.boundary[slot]
                else:
                    entry = Broken(f"comes through link {lid} from input {slot} of {scope.what} (node {scope.instance}), "
                                   f"which has {len(scope.boundary)} inputs")
            elif origin in outputs:
                outs = outputs[origin]
                if isinstance(slot, int) and 0 <= slot < len(outs):
                    entry = outs[slot]
                else:
                    entry = Unlinked(f"links to output {slot} of node {scope.prefix + origin} ({kinds[origin][2]}), which has "
                                     f"{len(outs)} outputs")
            elif origin in local or scope.instance is None:  # at the top, a missing node is warned about as before
                entry = (scope.prefix + origin, slot)
            else:
                entry = Broken(f"comes through link {lid} from node {origin}, which {scope.what} (node {scope.instance}) does not have")
            self.flat.links[scope.prefix + lid] = entry

        corner = None
        if scope.anchor is not None:
            ps = [p for n in local.values() if (p := _position(n.get("pos"))) is not None]
            corner = [min(p[0] for p in ps), min(p[1] for p in ps)] if ps else None
        for lid, n in local.items():
            nid = scope.prefix + lid
            k = kinds[lid]
            if k is None:
                self.add(n, lid, nid, scope, corner)
            elif lid not in expanded:  # muted or bypassed: a stand-in, so links to it are dropped or passed through
                stand_in = self.copy(n, nid, scope, corner)
                stand_in[LABEL] = k[2]
                self.flat.nodes[nid] = stand_in
            elif k[0] == "subgraph":
                self.expand_subgraph(n, nid, k[1], k[2], scope, corner)
            else:
                self.expand_group(n, nid, groups[lid], scope, corner)

    def copy(self, n: dict, nid: str, scope: _Scope, corner: list[float] | None) -> dict:
        node = dict(n, id=nid)
        if scope.prefix:
            node["inputs"] = [dict(inp, link=self.key(inp["link"], scope)) if isinstance(inp, dict) and inp.get("link") is not None
                              else inp for inp in n.get("inputs") or []]
        if "pos" in n:
            node["pos"] = self.place(n["pos"], scope, corner)
        return node

    def add(self, n: dict, lid: str, nid: str, scope: _Scope, corner: list[float] | None) -> None:
        if not scope.prefix:
            self.flat.nodes[nid] = n
            return
        node = self.copy(n, nid, scope, corner)
        values = scope.overrides.get(lid)
        if values:
            if n.get("type") == PRIMITIVE:  # its value is what it gives the inputs it feeds
                old = n.get("widgets_values")
                node["widgets_values"] = [next(iter(values.values()))] + (old[1:] if isinstance(old, list) else [])
            else:
                node[WIDGETS] = dict(values)
        self.flat.nodes[nid] = node

    # -- subgraphs --

    def subgraph_outputs(self, nid: str, sg: dict, what: str) -> list:
        """Per output of the instance: the inner link that feeds the subgraph's output node there."""
        rows = _link_rows(sg.get("links"))
        out = []
        for j, o in enumerate(_dicts(sg.get("outputs"))):
            ids = [str(x) for x in o.get("linkIds") or []] + list(rows)
            lid = next((x for x in ids if x in rows and rows[x][2] == SUBGRAPH_OUTPUT and rows[x][3] == j), None)
            out.append(Via(f"{nid}:{lid}") if lid is not None else
                       Unlinked(f"links to output {j} ({o.get('name')}) of node {nid} ({what}), which nothing inside the subgraph feeds"))
        return out

    def expand_subgraph(self, n: dict, nid: str, sg: dict, what: str, scope: _Scope, corner: list[float] | None) -> None:
        sid = str(sg["id"])
        if any(sid == s for s, _ in scope.chain):
            names = " > ".join([f"{name!r}" for _, name in scope.chain] + [repr(sg.get("name") or sid)])
            raise ComfyTranslationError(nid, f"{what} contains itself ({names}), which no one can run")
        inner = sg.get("nodes")
        if not isinstance(inner, list):
            raise ComfyTranslationError(nid, f"this is the ComfyUI {what}, whose definition has no 'nodes' list")
        lid = nid[len(scope.prefix):]
        rows = _link_rows(sg.get("links"))
        inputs = _dicts(n.get("inputs"))
        sg_inputs = _dicts(sg.get("inputs"))
        values, inner_overrides = self.promoted_values(n, nid, sg, rows, inputs, sg_inputs, scope.overrides.get(lid) or {})
        for path, widgets in scope.overrides.items():  # an enclosing instance's values for nodes inside this one win
            if path.startswith(lid + ":"):
                inner_overrides.setdefault(path[len(lid) + 1:], {}).update(widgets)
        boundary: list = []
        for k in range(len(sg_inputs)):
            inp = inputs[k] if k < len(inputs) else {}
            if inp.get("link") is not None:  # linked on the instance: the link goes on inside
                boundary.append(Via(self.key(inp["link"], scope)))
            elif k in values:
                boundary.append(WidgetValue(values[k]))
            elif isinstance(inp.get("widget"), dict):
                target = self.first_widget_target(sg, rows, sg_inputs[k], k)
                boundary.append(SameAs(f"{nid}:{target[0]}", target[1]) if target else Unlinked())
            else:
                boundary.append(Unlinked())
        self.expand(inner, sg.get("links"), _Scope(prefix=nid + ":", instance=nid, what=what, boundary=boundary,
                                                   chain=scope.chain + ((sid, sg.get("name") or sid),), overrides=inner_overrides,
                                                   anchor=_position(self.place(n.get("pos"), scope, corner))))

    def first_widget_target(self, sg: dict, rows: dict, sg_input: dict, k: int) -> tuple[str, str] | None:
        """The first inner widget input the subgraph's input k feeds: (inner node id, widget name)."""
        nodes = {str(x.get("id")): x for x in _dicts(sg.get("nodes"))}
        for lid in [str(x) for x in sg_input.get("linkIds") or []] + list(rows):
            row = rows.get(lid)
            if row is None or row[0] != SUBGRAPH_INPUT or row[1] != k or row[2] not in nodes:
                continue
            ins = _dicts(nodes[row[2]].get("inputs"))
            inp = next((i for i in ins if str(i.get("link")) == lid), None)
            if inp is None and isinstance(row[3], int) and 0 <= row[3] < len(ins):
                inp = ins[row[3]]
            if inp is not None and isinstance(inp.get("widget"), dict) and inp["widget"].get("name"):
                return row[2], inp["widget"]["name"]
        return None

    def promoted_values(self, n: dict, nid: str, sg: dict, rows: dict, inputs: list[dict], sg_inputs: list[dict],
                        given: dict[str, Any]) -> tuple[dict[int, Any], dict[str, dict[str, Any]]]:
        """The instance's promoted widget values: by subgraph input index, and by inner node for proxy widgets."""
        promoted = [k for k in range(min(len(inputs), len(sg_inputs))) if isinstance(inputs[k].get("widget"), dict)]
        values = n.get("widgets_values")
        values = values if isinstance(values, list) else []
        by_input: dict[int, Any] = {}
        inner: dict[str, dict[str, Any]] = {}
        proxies = _proxy_widgets(n)
        if proxies is not None:  # frontends of late 2025: one value per proxyWidgets entry
            for i, (source, name) in enumerate(proxies):
                if i >= len(values) or values[i] is None or name.startswith("$$"):  # "$$": an image preview, no value
                    continue
                if source == "-1":
                    k = next((k for k in promoted if inputs[k].get("name") == name), None)
                    if k is not None:
                        by_input[k] = values[i]
                else:
                    inner.setdefault(source, {})[name] = values[i]
        else:  # one value per promoted input; older files also kept a seed's control_after_generate value
            with_controls = len(values) > len(promoted)
            i = 0
            for k in promoted:
                if i >= len(values):
                    break
                if values[i] is not None:
                    by_input[k] = values[i]
                i += 1
                if with_controls:
                    target = self.first_widget_target(sg, rows, sg_inputs[k], k)
                    node = next((x for x in _dicts(sg.get("nodes")) if target and str(x.get("id")) == target[0]), None)
                    if target and node and _has_control(self.spec(node.get("type")), target[1]):
                        i += 1
        for name, value in given.items():  # an enclosing instance's values for this one's promoted inputs
            k = next((k for k in promoted if inputs[k].get("name") == name), None)
            if k is None:
                k = next((k for k in promoted if (t := self.first_widget_target(sg, rows, sg_inputs[k], k)) and t[1] == name), None)
            if k is not None:
                by_input[k] = value
        return by_input, inner

    # -- legacy group nodes --

    def group_layout(self, nid: str, data: Any, what: str) -> "_GroupLayout":
        """ComfyUI's group node layout (its GroupNodeConfig): which inner input each instance input is, which inner
        output each instance output, which inner widget each widget value."""
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, list):
            raise ComfyTranslationError(nid, f"this is the ComfyUI {what}, whose definition in extra.groupNodes has no 'nodes' list")
        nodes = _dicts(nodes)
        links_from: dict[int, dict[Any, list]] = {}
        links_to: dict[int, dict[Any, list]] = {}
        for link in data.get("links") or []:
            if not isinstance(link, list) or len(link) < 4 or link[0] is None:  # no origin: a link from outside
                continue
            src, src_slot, dst, dst_slot = (_slot(v) for v in link[:4])
            links_from.setdefault(src, {}).setdefault(src_slot, []).append(link)
            links_to.setdefault(dst, {})[dst_slot] = link
        external: dict[Any, set] = {}
        for ext in data.get("external") or []:
            if isinstance(ext, list) and len(ext) >= 2:
                external.setdefault(_slot(ext[0]), set()).add(_slot(ext[1]))
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        layout = _GroupLayout(nodes, links_to)
        later = []
        for i, g in enumerate(nodes):
            t = g.get("type")
            if t in (PRIMITIVE, REROUTE):
                raise ComfyTranslationError(nid, f"this is the ComfyUI {what}, which holds a {t} (its node {i}) and cannot be imported: "
                                                 "convert it to nodes in ComfyUI (right-click > Convert to nodes) and save the workflow again")
            if t in UI_ONLY:
                continue
            spec = self.spec(t)
            if spec is None:
                raise ComfyTranslationError(nid, f"its node {i} in {what}: {_unsupported(t)}")
            ins = _dicts(g.get("inputs"))
            cfg = config.get(str(i)) if isinstance(config.get(str(i)), dict) else {}
            # a widget converted to an input keeps its place among the node's inputs; it comes after all sockets
            converted = {}
            for w in spec.widgets:
                j = next((j for j, x in enumerate(ins) if x.get("name") == w and isinstance(x.get("widget"), dict)
                          and x["widget"].get("name") == w), None)
                if j is not None and w not in (CONTROL_AFTER_GENERATE, UPLOAD):
                    converted[j] = w
            previous = None
            for w in spec.widgets:  # the widgets left on the node, with their control and upload values
                if w == CONTROL_AFTER_GENERATE:
                    if previous is not None and previous not in converted.values():
                        layout.widgets.append((i, None))
                elif w == UPLOAD:
                    layout.widgets.append((i, None))
                else:
                    previous = w
                    if w not in converted.values():
                        layout.widgets.append((i, w))
            sockets = [x for x in ins if not isinstance(x.get("widget"), dict)]
            hidden = cfg.get("input") if isinstance(cfg.get("input"), dict) else {}
            for o, x in enumerate(sockets):  # ComfyUI counts a node's sockets from 0 whatever their place
                if links_to.get(i, {}).get(o) or (hidden.get(x.get("name")) or {}).get("visible") is False:
                    continue
                layout.inputs[(i, o)] = layout.count
                layout.count += 1
            later.append((i, len(sockets), converted, spec))
            shown = cfg.get("output") if isinstance(cfg.get("output"), dict) else {}
            for o in range(len(g.get("outputs") or [])):
                used_inside = bool(links_from.get(i, {}).get(o)) and o not in external.get(i, ())
                visible = (shown.get(str(o)) or {}).get("visible")
                if (not used_inside) if visible is None else visible:
                    layout.outputs.append((i, o))
        for i, n_sockets, converted, spec in later:  # converted widgets, ordered as JavaScript sorts their indexes
            for c, j in enumerate(sorted(converted, key=str)):
                if links_to.get(i, {}).get(n_sockets + c):
                    continue
                layout.inputs[(i, n_sockets + c)] = layout.count
                layout.count += 1
                layout.widgets.append((i, converted[j]))
                if _has_control(spec, converted[j]):
                    layout.widgets.append((i, None))
        return layout

    def expand_group(self, n: dict, nid: str, layout: "_GroupLayout", scope: _Scope, corner: list[float] | None) -> None:
        values = n.get("widgets_values") if isinstance(n.get("widgets_values"), list) else []
        given: dict[int, dict[str, Any]] = {}
        for p, (i, w) in enumerate(layout.widgets):
            if w is not None and p < len(values) and values[p] is not None:
                given.setdefault(i, {})[w] = values[p]
        inputs = _dicts(n.get("inputs"))
        inner = _Scope(prefix=nid + ":", instance=nid, anchor=_position(self.place(n.get("pos"), scope, corner)))
        ps = [p for g in layout.nodes if (p := _position(g.get("pos"))) is not None]
        inner_corner = [min(p[0] for p in ps), min(p[1] for p in ps)] if ps else None
        for i, g in enumerate(layout.nodes):
            if g.get("type") in UI_ONLY:
                continue
            gid = f"{nid}:{i}"
            node = dict(g, id=gid)
            if "pos" in g:
                node["pos"] = self.place(g["pos"], inner, inner_corner)
            new_inputs = []
            for s, inp in enumerate(g.get("inputs") or []):
                if not isinstance(inp, dict):
                    new_inputs.append(inp)
                    continue
                entry: Any = None
                if (i, s) in layout.inputs:  # an input of the instance
                    ext = layout.inputs[(i, s)]
                    outer = inputs[ext].get("link") if ext < len(inputs) else None
                    entry = Via(self.key(outer, scope)) if outer is not None else None
                elif (link := layout.links_to.get(i, {}).get(s)) is not None:
                    src = _slot(link[0])
                    entry = ((f"{nid}:{src}", _slot(link[1])) if isinstance(src, int) and 0 <= src < len(layout.nodes)
                             else Broken(f"comes from node {src} of group node {n.get('type')!r} (node {nid}), which it does not have"))
                if entry is None:
                    new_inputs.append(dict(inp, link=None))
                else:
                    self.flat.links[f"{gid}.{s}"] = entry
                    new_inputs.append(dict(inp, link=f"{gid}.{s}"))
            node["inputs"] = new_inputs
            if given.get(i):
                node[WIDGETS] = given[i]
            self.flat.nodes[gid] = node


@dataclass
class _GroupLayout:
    nodes: list[dict]
    links_to: dict[int, dict[Any, list]]
    inputs: dict[tuple[int, int], int] = field(default_factory=dict)  # (inner index, inner slot) -> instance input
    outputs: list[tuple[int, int]] = field(default_factory=list)  # instance output -> (inner index, inner slot)
    widgets: list[tuple[int, str | None]] = field(default_factory=list)  # instance widget -> (inner index, widget | None)
    count: int = 0


def flatten(workflow: dict, registry: Any = None) -> Flat:
    """The workflow's nodes with every subgraph and group node instance replaced by its inner nodes, and the table
    of every link (see the module's docstring)."""
    f = _Flattener(workflow, registry)
    f.expand(workflow["nodes"], workflow.get("links"), _Scope())
    return f.flat


# -- the prompt -----------------------------------------------------------------------------------------------------

def _label(n: dict) -> str:
    return n.get(LABEL) or n.get("type")


_MISSING = object()


def litegraph_to_prompt(workflow: dict, registry: Any = None, *, bypass: str = "keep") -> tuple[dict, dict[str, list[float]], list[str]]:
    """A ComfyUI editor workflow -> (the API prompt ComfyUI's frontend would send, node positions, warnings).

    Links come from the `links` table and widget values from `widgets_values` in ComfyUI's widget order (the
    seed's control_after_generate and LoadImage's upload values skipped); a widget converted to an input and
    linked is a link. Reroutes are followed, a PrimitiveNode's value becomes the literal of the inputs it
    feeds, muted nodes (mode 2) are left out with a warning (so are inputs linked to them, as ComfyUI does),
    Notes are skipped. Bypassed nodes (mode 4): `bypass="keep"` keeps them marked `_meta.mode = "bypass"`,
    which `prompt_to_workflow` turns into our bypass; `bypass="splice"` leaves them out and routes each link
    through the node's input of the same type, as ComfyUI's frontend does (so does "keep" for a bypassed class
    with no translation, with a warning). Subgraphs and group nodes are inlined (`flatten`): their inner nodes
    get ids "<instance id>:<inner id>" and positions from the instance's. Class types with no translation, and
    subgraphs or group nodes that cannot be inlined, are refused with a ComfyTranslationError naming the node.
    """
    _ensure_tables()
    if bypass not in ("keep", "splice"):
        raise ValueError(f"bypass must be 'keep' or 'splice', got {bypass!r}")
    if not is_litegraph_workflow(workflow):
        raise ComfyTranslationError(None, "not a ComfyUI editor workflow: it has no 'nodes' list")
    for n in workflow["nodes"]:
        if not isinstance(n, dict) or n.get("id") is None:
            raise ComfyTranslationError(None, f"every node of the workflow must be an object with an 'id', got {str(n)[:80]}")
    flat = flatten(workflow, registry)
    nodes, links = flat.nodes, flat.links
    for nid, n in nodes.items():
        t = n.get("type")
        if not isinstance(t, str) or not t:
            raise ComfyTranslationError(nid, "the node has no 'type'")

    warnings: list[str] = []
    # bypassed nodes left out, their links routed through (all of them with "splice"; with "keep", those we could
    # not translate anyway: a bypassed custom node changes nothing, so it does not stop the import)
    spliced: set[str] = set()
    for nid, n in nodes.items():
        if n.get("mode") == MODE_BYPASS and n["type"] not in (REROUTE, PRIMITIVE) and n["type"] not in UI_ONLY:
            if n.get(LABEL):
                spliced.add(nid)
                warnings.append(f"node {nid} ({n[LABEL]}) is bypassed: left out with the nodes inside it, its links passed "
                                "through as ComfyUI does")
            elif bypass == "splice":
                spliced.add(nid)
            elif _spec_of(n["type"], registry) is None:
                spliced.add(nid)
                warnings.append(f"node {nid} ({n['type']}) is bypassed and has no translation here: left out, its links "
                                "passed through as ComfyUI does")

    def resolve(link_id: Any, want_type: Any, nid: str, name: Any) -> tuple | None:
        """Where a link really comes from: ("link", node id, slot), ("value", literal), ("same_as", node id, widget),
        ("drop", why), or None (ComfyUI sends no link, so a widget's own value stands)."""
        seen: set[str] = set()
        key = str(link_id)
        while True:
            if key in seen:
                raise ComfyTranslationError(nid, f"input {name!r}: its link loops through Reroute or bypassed nodes")
            seen.add(key)
            origin = links.get(key)
            if origin is None:
                warnings.append(f"node {nid}: input {name!r} names link {link_id}, which the workflow does not list; left unlinked")
                return None
            if isinstance(origin, Via):
                key = origin.key
                continue
            if isinstance(origin, WidgetValue):
                return ("value", origin.value)
            if isinstance(origin, SameAs):
                return ("same_as", origin.node, origin.widget)
            if isinstance(origin, Unlinked):
                if origin.warning:
                    warnings.append(f"node {nid}: input {name!r} {origin.warning}; left unlinked")
                return None
            if isinstance(origin, Broken):
                raise ComfyTranslationError(nid, f"input {name!r} {origin.message}")
            src_id, slot = origin
            src = nodes.get(src_id)
            if src is None:  # ComfyUI finds no node, so sends no link
                warnings.append(f"node {nid}: input {name!r} links to node {src_id}, which does not exist; left unlinked")
                return None
            t = src.get("type")
            if t == REROUTE:
                ins = src.get("inputs") or []
                nxt = ins[0].get("link") if ins and isinstance(ins[0], dict) else None
                if nxt is None:
                    return None
                key = str(nxt)
                continue
            if t == PRIMITIVE:
                values = src.get("widgets_values")
                if isinstance(values, list) and values:
                    return ("value", values[0])
                if isinstance(values, dict) and values:
                    return ("value", next(iter(values.values())))
                return None
            mode = src.get("mode")
            if mode == MODE_MUTED:
                return ("drop", f"links to node {src_id} ({_label(src)}), which is muted")
            if not isinstance(slot, int):
                raise ComfyTranslationError(nid, f"input {name!r}: link {key} has no output slot number ({slot!r})")
            if src_id in spliced:
                ins = src.get("inputs") or []
                order = [slot] + list(range(len(ins)))
                match = next((i for i in order if 0 <= i < len(ins) and isinstance(ins[i], dict) and ins[i].get("type") == want_type), None)
                if match is None:
                    return ("drop", f"links to node {src_id} ({_label(src)}), which is bypassed and has no input of type {want_type} to pass through")
                if ins[match].get("link") is None:
                    return None
                key = str(ins[match]["link"])
                continue
            if t in UI_ONLY:
                return ("drop", f"links to node {src_id} ({t}), which ComfyUI does not run")
            return ("link", src_id, slot)

    def widget_value(node_id: str, widget: str) -> Any:
        """The value a node's widget has (for a promoted widget without a value of its own)."""
        n = nodes.get(node_id)
        spec = _spec_of(n.get("type"), registry) if n is not None else None
        if spec is None:
            return _MISSING
        values = _widget_inputs(node_id, n["type"], spec, n.get("widgets_values"), [])
        values.update(n.get(WIDGETS) or {})
        return values.get(widget, _MISSING)

    prompt: dict[str, dict] = {}
    positions: dict[str, list[float]] = {}
    for nid, n in nodes.items():
        t = n["type"]
        if t in (REROUTE, PRIMITIVE) or t in UI_ONLY:
            continue
        mode = n.get("mode", 0)
        if mode == MODE_MUTED:
            if n.get(LABEL):
                warnings.append(f"node {nid} ({n[LABEL]}) is muted in ComfyUI: left out with the nodes inside it, as ComfyUI "
                                "leaves them out of the prompt")
            else:
                warnings.append(f"node {nid} ({t}) is muted in ComfyUI: left out, as ComfyUI leaves it out of the prompt")
            continue
        if nid in spliced:
            continue
        spec = _spec_of(t, registry)
        if spec is None:
            raise ComfyTranslationError(nid, _unsupported(t))
        inputs = _widget_inputs(nid, t, spec, n.get("widgets_values"), warnings)
        for wname, value in (n.get(WIDGETS) or {}).items():  # values its subgraph or group node instance gives it
            if spec.widgets and wname not in spec.widgets:
                warnings.append(f"node {nid} ({t}): its instance gives widget {wname!r}, which is not one of ComfyUI's {t} widgets; ignored")
            else:
                inputs[wname] = value
        for inp in n.get("inputs") or []:
            if not isinstance(inp, dict) or inp.get("link") is None:
                continue
            name = _input_name(inp)
            where = resolve(inp["link"], inp.get("type"), nid, name)
            if where is None:
                continue
            if where[0] == "link":
                inputs[name] = [where[1], where[2]]
            elif where[0] == "value":
                inputs[name] = where[1]
            elif where[0] == "same_as":
                if (where[1], where[2]) != (nid, name) and (value := widget_value(where[1], where[2])) is not _MISSING:
                    inputs[name] = value
            else:  # ComfyUI drops an input linked to a node it leaves out
                inputs.pop(name, None)
                warnings.append(f"node {nid}: input {name!r} {where[1]}; left unconnected")
        missing = [w for w in spec.widgets if w not in (CONTROL_AFTER_GENERATE, UPLOAD) and w not in inputs]
        if missing and isinstance(n.get("widgets_values"), list):
            warnings.append(f"node {nid} ({t}): no value for {', '.join(missing)} in widgets_values; the default applies")
        entry: dict[str, Any] = {"inputs": inputs, "class_type": t}
        meta: dict[str, Any] = {}
        if isinstance(n.get("title"), str) and n["title"]:
            meta["title"] = n["title"]
        if mode == MODE_BYPASS:
            meta["mode"] = "bypass"
        if meta:
            entry["_meta"] = meta
        prompt[nid] = entry
        pos = _position(n.get("pos"))
        if pos is not None:
            positions[nid] = pos
    return prompt, positions, warnings


def litegraph_to_workflow(workflow: dict, registry: Any = None) -> tuple[dict, list[str]]:
    """A ComfyUI editor workflow -> (our workflow, warnings): `litegraph_to_prompt`, then the prompt's translation,
    with the editor positions as `ui.pos` and bypassed nodes as our bypass."""
    prompt, positions, warnings = litegraph_to_prompt(workflow, registry)
    if not prompt:
        raise ComfyTranslationError(None, "the workflow has no node ComfyUI would run")
    wf = prompt_to_workflow(prompt, registry)
    for nid, pos in positions.items():
        wf["nodes"][nid]["ui"]["pos"] = pos
    wf["ui"] = {"source": "comfyui"}
    return wf, warnings
