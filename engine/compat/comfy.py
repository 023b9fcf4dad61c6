"""ComfyUI API-format prompts and editor workflows -> our workflows, so ComfyUI clients and files run unchanged.

A ComfyUI prompt is `{id: {"class_type": ..., "inputs": {name: literal | [source_id, output_index]}}}`.
Each supported class type maps to one of our nodes: its input names, its numbered outputs as our named
outputs, and (where the vocabularies differ, e.g. sampler names) a value translation. The table is data:
`COMFY_CLASSES`, extended by the node families that define the target nodes (`register_comfy_class`).

ComfyUI's editor saves another shape, the LiteGraph workflow `{nodes: [{id, type, inputs, widgets_values}],
links: [[id, from, from_slot, to, to_slot, type]]}`, whose widget values are positional. Each table entry
records ComfyUI's widget order (`ComfyClass.widgets`), so `litegraph_to_prompt` rebuilds the API prompt
ComfyUI's own frontend would send (Reroutes followed, PrimitiveNodes inlined, muted nodes left out), and
that prompt then takes the same translation as any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..workflow import CURRENT_VERSION, FORMAT


class ComfyTranslationError(ValueError):
    """A prompt we cannot translate; the message names the ComfyUI node id and class."""

    def __init__(self, node_id: str | None, message: str):
        self.node_id = node_id
        super().__init__(f"node {node_id}: {message}" if node_id is not None else message)


# Placeholders in `ComfyClass.widgets`: values ComfyUI's editor stores in `widgets_values` that are no inputs.
CONTROL_AFTER_GENERATE = "control_after_generate"  # after a seed widget: fixed | increment | decrement | randomize
UPLOAD = "upload"  # after an image_upload combo (LoadImage): the upload button's value, "image"
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


@dataclass
class ComfyClass:
    our_type: str
    inputs: dict[str, str | None] = field(default_factory=dict)  # comfy input -> our input (None: dropped)
    outputs: list[str] = field(default_factory=list)  # comfy output index -> our output name
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # on the translated literal inputs
    output_node: bool = False
    choices: dict[str, Callable[[], list]] = field(default_factory=dict)  # comfy input -> its own vocabulary (object_info)
    # ComfyUI's widgets in `widgets_values` order: the non-socket inputs of INPUT_TYPES, required then optional,
    # with the CONTROL_AFTER_GENERATE / UPLOAD placeholders where its editor adds a widget of its own
    widgets: tuple[str, ...] = ()


COMFY_CLASSES: dict[str, ComfyClass] = {}


def register_comfy_class(name: str, spec: ComfyClass) -> None:
    COMFY_CLASSES[name] = spec


def is_comfy_prompt(data: Any) -> bool:
    """ComfyUI API format: an object of objects with `class_type` (optionally wrapped in {"prompt": ...})."""
    if not isinstance(data, dict) or "format" in data:
        return False
    if "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]
    return bool(data) and all(isinstance(v, dict) and "class_type" in v for v in data.values())


def _ensure_tables() -> None:
    # the node families register their ComfyUI equivalents when imported
    if not COMFY_CLASSES or "CheckpointLoaderSimple" not in COMFY_CLASSES or "LoraLoader" not in COMFY_CLASSES:
        import importlib

        for mod in ("nodes.image", "nodes.mask", "nodes.unet_patches", "nodes.comfy_compat", "nodes.comfy_compat_control"):
            try:
                importlib.import_module(mod)
            except ImportError:
                pass


def _our_widgets(d: Any) -> tuple[str, ...]:
    """The widget order ComfyUI's editor gives one of our nodes as `/object_info` lists it: inputs that take a
    literal (numbers, text, booleans, choices), required ones first, a seed's control right after the seed, and
    an upload button after the last required one (its editor appends the button's input to the required ones)."""
    literal_types = {"INT", "FLOAT", "STRING", "BOOLEAN"}
    first: list[str] = []
    later: list[str] = []
    upload = False
    for inp in d.inputs.values():
        if inp.link_only or not (inp.type.name in literal_types or inp.static_choices or inp.choices is not None):
            continue
        names = [inp.name]
        if inp.widget.seed and inp.type.name == "INT":
            names.append(CONTROL_AFTER_GENERATE)
        upload = upload or bool(inp.widget.upload)
        optional = not inp.required and inp.default is None
        (later if optional else first).extend(names)
    return tuple(first + [UPLOAD] * upload + later)


def _spec_of(class_type: Any, registry: Any) -> ComfyClass | None:
    """The table entry, else (with a registry) one of our own node types used under its own name."""
    spec = COMFY_CLASSES.get(class_type)
    if spec is None and registry is not None and isinstance(class_type, str):
        d = registry.get(class_type)
        if d is not None:
            spec = ComfyClass(d.name, outputs=[o.name for o in d.outputs], output_node=d.output_node, widgets=_our_widgets(d))
    return spec


def _unsupported(class_type: Any) -> str:
    return f"ComfyUI class_type {class_type!r} is not supported (supported: {', '.join(sorted(COMFY_CLASSES))})"


def prompt_to_workflow(prompt: dict, registry: Any = None) -> dict:
    """Translate a ComfyUI API prompt into a version-1 workflow (node ids kept).

    With a `registry`, class types that are our own node names (as `/object_info` lists them) pass
    through unchanged, so a client built on our `/object_info` can post prompts too.
    """
    _ensure_tables()
    if "prompt" in prompt and isinstance(prompt["prompt"], dict) and "class_type" not in prompt.get("prompt", {}):
        prompt = prompt["prompt"]
    nodes: dict[str, dict] = {}
    for nid, entry in prompt.items():
        cls = entry.get("class_type")
        spec = _spec_of(cls, registry)
        if spec is None:
            raise ComfyTranslationError(str(nid), _unsupported(cls))
        inputs: dict[str, Any] = {}
        links: dict[str, Any] = {}
        for name, value in (entry.get("inputs") or {}).items():
            target = spec.inputs.get(name, name)
            if target is None:
                continue
            if isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], (str, int)):
                src = str(value[0])
                src_entry = prompt.get(src) if src in prompt else prompt.get(value[0])
                if src_entry is None:
                    raise ComfyTranslationError(str(nid), f"input {name!r} links to node {src!r}, which does not exist")
                src_spec = _spec_of(src_entry.get("class_type"), registry)
                if src_spec is None:
                    raise ComfyTranslationError(src, f"ComfyUI class_type {src_entry.get('class_type')!r} is not supported")
                if not 0 <= value[1] < len(src_spec.outputs):
                    raise ComfyTranslationError(str(nid), f"input {name!r} links to output {value[1]} of {src} "
                                                          f"({src_entry.get('class_type')}), which has {len(src_spec.outputs)} outputs")
                links[target] = {"node": src, "output": src_spec.outputs[value[1]]}
            else:
                inputs[target] = {"value": value} if isinstance(value, dict) else value
        if spec.convert is not None:
            try:
                inputs = spec.convert(inputs)
            except ComfyTranslationError:
                raise
            except ValueError as exc:
                raise ComfyTranslationError(str(nid), str(exc)) from None
        inputs.update(links)
        meta = entry.get("_meta") or {}
        title = meta.get("title")
        node = {"type": spec.our_type, "inputs": inputs, "ui": {"comfy_class": cls, **({"title": title} if title else {})}}
        if meta.get("mode") == "bypass":  # litegraph_to_prompt keeps bypassed nodes so marked
            node["mode"] = "bypass"
        nodes[str(nid)] = node
    return {"format": FORMAT, "version": CURRENT_VERSION, "nodes": nodes, "ui": {"source": "comfyui-api"}}


# -- ComfyUI's editor (LiteGraph) workflows -> API prompts ----------------------------------------------------

REROUTE = "Reroute"  # frontend-only: a link passes through it
PRIMITIVE = "PrimitiveNode"  # frontend-only: its value becomes the literal of the widget inputs it feeds
UI_ONLY = frozenset({"Note", "MarkdownNote"})  # frontend-only, nothing to run
MODE_MUTED, MODE_BYPASS = 2, 4  # LiteGraph node modes ComfyUI gives a meaning ("never", "bypass")


def is_litegraph_workflow(data: Any) -> bool:
    """ComfyUI's editor format: `{nodes: [...], links: [...]}` (ours has `format` and a `nodes` object)."""
    return isinstance(data, dict) and "format" not in data and isinstance(data.get("nodes"), list)


def _link_table(links: Any) -> dict[str, tuple[str, Any]]:
    """link id -> (origin node id, origin slot), from `[id, from, from_slot, to, to_slot, type]` arrays or
    the `{id, origin_id, origin_slot, ...}` objects of the newer schema."""
    table: dict[str, tuple[str, Any]] = {}
    for link in links or []:
        if isinstance(link, list) and len(link) >= 5:
            link_id, origin, slot = link[0], link[1], link[2]
        elif isinstance(link, dict) and "id" in link:
            link_id, origin, slot = link["id"], link.get("origin_id"), link.get("origin_slot")
        else:
            continue
        try:  # ComfyUI sends parseInt(origin_slot)
            slot = int(slot)
        except (TypeError, ValueError):
            pass
        table[str(link_id)] = (str(origin), slot)
    return table


def _position(pos: Any) -> list[float] | None:
    if isinstance(pos, dict):  # older files: {"0": x, "1": y}
        pos = [pos.get("0"), pos.get("1")]
    if isinstance(pos, (list, tuple)) and len(pos) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pos[:2]):
        return [pos[0], pos[1]]
    return None


def _input_name(inp: dict) -> Any:
    widget = inp.get("widget")
    return widget["name"] if isinstance(widget, dict) and widget.get("name") else inp.get("name")


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


def litegraph_to_prompt(workflow: dict, registry: Any = None, *, bypass: str = "keep") -> tuple[dict, dict[str, list[float]], list[str]]:
    """A ComfyUI editor workflow -> (the API prompt ComfyUI's frontend would send, node positions, warnings).

    Links come from the `links` table and widget values from `widgets_values` in ComfyUI's widget order (the
    seed's control_after_generate and LoadImage's upload values skipped); a widget converted to an input and
    linked is a link. Reroutes are followed, a PrimitiveNode's value becomes the literal of the inputs it
    feeds, muted nodes (mode 2) are left out with a warning (so are inputs linked to them, as ComfyUI does),
    Notes are skipped. Bypassed nodes (mode 4): `bypass="keep"` keeps them marked `_meta.mode = "bypass"`,
    which `prompt_to_workflow` turns into our bypass; `bypass="splice"` leaves them out and routes each link
    through the node's input of the same type, as ComfyUI's frontend does (so does "keep" for a bypassed class
    with no translation, with a warning). Group nodes, subgraphs and class types with no translation are refused
    with a ComfyTranslationError naming the node.
    """
    _ensure_tables()
    if bypass not in ("keep", "splice"):
        raise ValueError(f"bypass must be 'keep' or 'splice', got {bypass!r}")
    if not is_litegraph_workflow(workflow):
        raise ComfyTranslationError(None, "not a ComfyUI editor workflow: it has no 'nodes' list")
    nodes: dict[str, dict] = {}
    for n in workflow["nodes"]:
        if not isinstance(n, dict) or n.get("id") is None:
            raise ComfyTranslationError(None, f"every node of the workflow must be an object with an 'id', got {str(n)[:80]}")
        nodes[str(n["id"])] = n
    links = _link_table(workflow.get("links"))
    group_nodes = set((workflow.get("extra") or {}).get("groupNodes") or {})
    subgraphs = {str(sg.get("id")): sg.get("name") or sg.get("id")
                 for sg in ((workflow.get("definitions") or {}).get("subgraphs") or []) if isinstance(sg, dict)}
    for nid, n in nodes.items():
        t = n.get("type")
        if not isinstance(t, str) or not t:
            raise ComfyTranslationError(nid, "the node has no 'type'")
        if t in subgraphs:
            raise ComfyTranslationError(nid, f"this is the ComfyUI subgraph {subgraphs[t]!r}, which cannot be imported: unpack it in "
                                             "ComfyUI (right-click > Unpack Subgraph) and save the workflow again")
        if t.startswith(("workflow>", "workflow/")) or t in group_nodes:
            raise ComfyTranslationError(nid, f"this is the ComfyUI group node {t!r}, which cannot be imported: convert it to nodes "
                                             "in ComfyUI (right-click > Convert to nodes) and save the workflow again")

    warnings: list[str] = []
    # bypassed nodes left out, their links routed through (all of them with "splice"; with "keep", those we could
    # not translate anyway: a bypassed custom node changes nothing, so it does not stop the import)
    spliced: set[str] = set()
    for nid, n in nodes.items():
        if n.get("mode") == MODE_BYPASS and n["type"] not in (REROUTE, PRIMITIVE) and n["type"] not in UI_ONLY:
            if bypass == "splice":
                spliced.add(nid)
            elif _spec_of(n["type"], registry) is None:
                spliced.add(nid)
                warnings.append(f"node {nid} ({n['type']}) is bypassed and has no translation here: left out, its links "
                                "passed through as ComfyUI does")

    def resolve(link_id: Any, want_type: Any, nid: str, name: Any) -> tuple | None:
        """Where a link really comes from: ("link", node id, slot), ("value", literal), ("drop", why), or None
        (ComfyUI sends no link, so a widget's own value stands)."""
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
                return ("drop", f"links to node {src_id} ({t}), which is muted")
            if not isinstance(slot, int):
                raise ComfyTranslationError(nid, f"input {name!r}: link {key} has no output slot number ({slot!r})")
            if src_id in spliced:
                ins = src.get("inputs") or []
                order = [slot] + list(range(len(ins)))
                match = next((i for i in order if 0 <= i < len(ins) and isinstance(ins[i], dict) and ins[i].get("type") == want_type), None)
                if match is None:
                    return ("drop", f"links to node {src_id} ({t}), which is bypassed and has no input of type {want_type} to pass through")
                if ins[match].get("link") is None:
                    return None
                key = str(ins[match]["link"])
                continue
            if t in UI_ONLY:
                return ("drop", f"links to node {src_id} ({t}), which ComfyUI does not run")
            return ("link", src_id, slot)

    prompt: dict[str, dict] = {}
    positions: dict[str, list[float]] = {}
    for nid, n in nodes.items():
        t = n["type"]
        if t in (REROUTE, PRIMITIVE) or t in UI_ONLY:
            continue
        mode = n.get("mode", 0)
        if mode == MODE_MUTED:
            warnings.append(f"node {nid} ({t}) is muted in ComfyUI: left out, as ComfyUI leaves it out of the prompt")
            continue
        if nid in spliced:
            continue
        spec = _spec_of(t, registry)
        if spec is None:
            raise ComfyTranslationError(nid, _unsupported(t))
        inputs = _widget_inputs(nid, t, spec, n.get("widgets_values"), warnings)
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


def _image_scale(inputs: dict) -> dict:
    method = inputs.pop("upscale_method", "bilinear")
    inputs["method"] = {"nearest-exact": "nearest", "bislerp": "bilinear"}.get(method, method)
    return inputs


def _outpaint(inputs: dict) -> dict:
    inputs.setdefault("value", 0.5)  # ComfyUI fills the new border with grey (a client built on our /object_info
    inputs.setdefault("mode", "constant")  # sees ImagePad's value and mode, and may send them)
    return inputs


# widgets: ComfyUI's nodes.py (SaveImage, PreviewImage, LoadImage, ImageScale, ImageScaleBy, ImageInvert,
# ImageScaleToTotalPixels, ImagePadForOutpaint) and comfy_extras/nodes_post_processing.py (ImageBlend). ImageFlip and
# ImageRotate (comfy_extras/nodes_images.py) are our own nodes under their names.
register_comfy_class("SaveImage", ComfyClass("SaveImage", outputs=[], output_node=True, widgets=("filename_prefix",)))
register_comfy_class("PreviewImage", ComfyClass("PreviewImage", outputs=[], output_node=True))
register_comfy_class("LoadImage", ComfyClass("LoadImage", inputs={"upload": None}, outputs=["image", "mask"], widgets=("image", UPLOAD)))
register_comfy_class("ImageScale", ComfyClass("ImageResize", inputs={"image": "image"}, outputs=["image"], convert=_image_scale,
                                              widgets=("upscale_method", "width", "height", "crop")))
register_comfy_class("ImageScaleBy", ComfyClass("ImageScaleBy", inputs={"scale_by": "scale"}, outputs=["image"], convert=_image_scale,
                                                widgets=("upscale_method", "scale_by")))
register_comfy_class("ImageInvert", ComfyClass("ImageInvert", outputs=["image"]))
register_comfy_class("ImageBlend", ComfyClass("ImageBlend", outputs=["image"], widgets=("blend_factor", "blend_mode")))
register_comfy_class("ImageScaleToTotalPixels", ComfyClass("ImageScaleToTotalPixels", outputs=["image"], convert=_image_scale,
                                                           widgets=("upscale_method", "megapixels")))
register_comfy_class("ImagePadForOutpaint", ComfyClass("ImagePad", outputs=["image", "mask"], convert=_outpaint,
                                                       widgets=("left", "top", "right", "bottom", "feathering")))
