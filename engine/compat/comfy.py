"""ComfyUI API-format prompts and editor workflows -> our workflows, so ComfyUI clients and files run unchanged.

A ComfyUI prompt is `{id: {"class_type": ..., "inputs": {name: literal | [source_id, output_index]}}}`.
Each supported class type maps to one of our nodes: its input names, its numbered outputs as our named
outputs, and (where the vocabularies differ, e.g. sampler names) a value translation. The table is data:
`COMFY_CLASSES`, extended by the node families that define the target nodes (`register_comfy_class`).

ComfyUI's editor saves another shape, the LiteGraph workflow `{nodes: [{id, type, inputs, widgets_values}],
links: [[id, from, from_slot, to, to_slot, type]]}`, whose widget values are positional. Each table entry
records ComfyUI's widget order (`ComfyClass.widgets`), so `litegraph_to_prompt` (engine/compat/litegraph.py,
importable from here too) rebuilds the API prompt ComfyUI's own frontend would send (Reroutes followed,
PrimitiveNodes inlined, muted nodes left out, subgraphs and group nodes inlined), and that prompt then takes
the same translation as any other.
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


_tables_loaded = False


def _ensure_tables() -> None:
    """Import every node family once (`nodes/*.py`, the modules `Registry.load_package` discovers): each registers
    its ComfyUI equivalents when imported, so a translation without a registry sees them all."""
    global _tables_loaded
    if _tables_loaded:
        return
    import importlib
    import pkgutil

    try:
        pkg = importlib.import_module("nodes")
    except ImportError:
        return
    for info in pkgutil.iter_modules(pkg.__path__, prefix="nodes."):
        if not info.ispkg:
            try:
                importlib.import_module(info.name)
            except Exception:  # a family whose optional dependency is missing: its classes stay untranslated
                pass
    _tables_loaded = True


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


# -- ComfyUI's editor (LiteGraph) workflows: engine/compat/litegraph.py, its public names importable from here too ----

_LITEGRAPH_NAMES = frozenset({"REROUTE", "PRIMITIVE", "UI_ONLY", "MODE_MUTED", "MODE_BYPASS", "is_litegraph_workflow",
                              "litegraph_to_prompt", "litegraph_to_workflow", "flatten"})


def __getattr__(name: str) -> Any:  # imported on first use: that module imports this one
    if name in _LITEGRAPH_NAMES:
        from . import litegraph

        return getattr(litegraph, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
register_comfy_class("ImageScaleToMaxDimension", ComfyClass("ImageScaleToMaxDimension", outputs=["image"], convert=_image_scale,
                                                            widgets=("upscale_method", "largest_size")))
register_comfy_class("ImageCompositeMasked", ComfyClass("ImageComposite", outputs=["image"], widgets=("x", "y", "resize_source")))
register_comfy_class("ImageBlend", ComfyClass("ImageBlend", outputs=["image"], widgets=("blend_factor", "blend_mode")))
register_comfy_class("ImageScaleToTotalPixels", ComfyClass("ImageScaleToTotalPixels", outputs=["image"], convert=_image_scale,
                                                           widgets=("upscale_method", "megapixels")))
register_comfy_class("ImagePadForOutpaint", ComfyClass("ImagePad", outputs=["image", "mask"], convert=_outpaint,
                                                       widgets=("left", "top", "right", "bottom", "feathering")))
