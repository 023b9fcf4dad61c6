"""`/object_info` in ComfyUI's shape, built from our catalog (`NodeSchema`s).

Widget inputs become `["INT", {"default", "min", "max", "step"}]` and the like, choices become
`[[...choices], {"default"}]`, link-only sockets `["IMAGE"]`. ComfyUI's "optional" means "may stay
unconnected", so widgets with a default are listed as required (the client always sends a value) and
only sockets that may be left empty are optional. Node names are ours; `POST /prompt` accepts them.
"""

from __future__ import annotations

import sys
from typing import Any

INT_BOUNDS = (-(2**63), 2**64 - 1)
FLOAT_BOUNDS = (-sys.float_info.max, sys.float_info.max)


def _number(v: float | None, integer: bool) -> Any:
    if v is None:
        return None
    return int(v) if integer else float(v)


def input_spec(inp: dict) -> tuple[list, bool]:
    """-> (ComfyUI input spec, is optional)."""
    config: dict[str, Any] = {}
    if inp.get("description"):
        config["tooltip"] = inp["description"]
    if inp.get("advanced"):
        config["advanced"] = True
    t = inp["type"]
    default = inp.get("default")
    optional = not inp["required"] and (inp.get("link_only") or default is None)
    if inp.get("link_only"):
        return ([t, config] if config else [t]), optional
    if inp.get("choices") is not None:
        choices = list(inp["choices"])
        config["default"] = default if default is not None else (choices[0] if choices else None)
        if inp.get("upload") == "image":
            config["image_upload"] = True
        return [choices, config], optional
    if t in ("INT", "FLOAT"):
        integer = t == "INT"
        lo, hi = INT_BOUNDS if integer else FLOAT_BOUNDS
        config["default"] = default if default is not None else (0 if integer else 0.0)
        config["min"] = _number(inp.get("min"), integer) if inp.get("min") is not None else lo
        config["max"] = _number(inp.get("max"), integer) if inp.get("max") is not None else hi
        config["step"] = _number(inp.get("step"), integer) if inp.get("step") is not None else (1 if integer else 0.01)
        if integer and inp.get("seed"):
            config["control_after_generate"] = True
        if inp.get("slider"):
            config["display"] = "slider"
        if not integer:
            config["round"] = False
        return [t, config], optional
    if t == "STRING":
        config["default"] = default if default is not None else ""
        config["multiline"] = bool(inp.get("multiline"))
        if inp.get("placeholder"):
            config["placeholder"] = inp["placeholder"]
        return [t, config], optional
    if t == "BOOLEAN":
        config["default"] = bool(default) if default is not None else False
        return [t, config], optional
    return ([t, config] if config else [t]), optional


def node_info(schema: dict) -> dict:
    required: dict[str, list] = {}
    optional: dict[str, list] = {}
    for inp in schema["inputs"]:
        spec, is_optional = input_spec(inp)
        (optional if is_optional else required)[inp["name"]] = spec
    outputs = schema["outputs"]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [o["type"] for o in outputs],
        "output_is_list": [False] * len(outputs),
        "output_name": [o["name"] for o in outputs],
        "output_tooltips": [o.get("description", "") for o in outputs],
        "name": schema["name"],
        "display_name": schema["display_name"],
        "description": schema["description"],
        "python_module": "latentloom",
        "category": schema["category"],
        "output_node": schema["output_node"],
        "deprecated": False,
        "experimental": False,
    }


# ComfyUI's type names for the sockets whose names differ from ours
_COMFY_TYPES = {"UNET": "MODEL", "TEXT_ENCODER": "CLIP", "SAMPLER_ALGO": "SAMPLER"}


_LITERALS = ("INT", "FLOAT", "STRING", "BOOLEAN")


def comfy_class_info(name: str, spec: Any, catalog: dict) -> dict | None:
    """A ComfyUI class (KSampler, CheckpointLoaderSimple, ...) described with ComfyUI's input names and
    vocabularies, from the schema of the node it translates to; clients that read these entries to build
    prompts (sampler lists, checkpoint lists) keep working."""
    ours = catalog["nodes"].get(spec.our_type)
    if ours is None:
        return None
    back = {v: k for k, v in spec.inputs.items() if v}
    inputs = []
    order = {name: i for i, name in enumerate(getattr(spec, "widgets", ()))}
    if order:  # ComfyUI's widget order: a ComfyUI frontend saves `widgets_values` in the order it is given. Our
        # widgets that the class lacks (VAEDecodeTiled: `tiled`, set by the translation) are left out, so a frontend
        # built from this list saves exactly the class's widgets.
        def comfy_widget(i: dict) -> bool:
            return back.get(i["name"], i["name"]) in order

        def widget(i: dict) -> bool:
            return not i.get("link_only") and (i["type"] in _LITERALS or i.get("choices") is not None)

        kept = [i for i in ours["inputs"] if comfy_widget(i) or not widget(i)]
        ours = dict(ours, inputs=sorted(kept, key=lambda i: order.get(back.get(i["name"], i["name"]), -1)))
    for inp in ours["inputs"]:
        inp = dict(inp, name=back.get(inp["name"], inp["name"]), type=_COMFY_TYPES.get(inp["type"], inp["type"]))
        source = spec.choices.get(inp["name"])
        if source is not None:
            inp["choices"] = list(source())
            inp["default"] = inp["choices"][0] if inp["choices"] else None
        inputs.append(inp)
    types = {o["name"]: o["type"] for o in ours["outputs"]}
    outputs = [{"name": _COMFY_TYPES.get(types.get(o, "*"), types.get(o, "*")), "type": _COMFY_TYPES.get(types.get(o, "*"), types.get(o, "*"))}
               for o in spec.outputs]
    info = node_info(dict(ours, name=name, display_name=name, inputs=inputs, outputs=outputs))
    info["description"] = f"ComfyUI's {name}, run as Latent Loom's {spec.our_type}. " + ours["description"]
    return info


def object_info(catalog: dict) -> dict:
    """Our nodes under their names, plus the ComfyUI classes we translate (where the names differ)."""
    from ..compat.comfy import COMFY_CLASSES, _ensure_tables

    _ensure_tables()
    out = {name: node_info(schema) for name, schema in catalog["nodes"].items()}
    for name, spec in COMFY_CLASSES.items():
        if name not in out:
            info = comfy_class_info(name, spec, catalog)
            if info is not None:
                out[name] = info
    return out
