"""ComfyUI class types for LoRA, ControlNet and Canny -> our nodes (see nodes/comfy_compat.py).

Differences worth knowing: ComfyUI's Canny takes thresholds in 0..1 (on its own gradient scale); they become
OpenCV's 0..255 thresholds here. ControlNetApplyAdvanced's start/end percent are ComfyUI's percentages of the noise
levels (`percent_of="noise levels"`; our own node defaults to diffusers' fractions of the steps), and its optional
`vae` input is not needed.
"""

from __future__ import annotations

from engine.compat.comfy import ComfyClass, register_comfy_class


def _advanced(inputs: dict) -> dict:
    inputs.setdefault("percent_of", "noise levels")
    return inputs


def _canny(inputs: dict) -> dict:
    for key in ("low_threshold", "high_threshold"):
        if key in inputs and isinstance(inputs[key], (int, float)) and not isinstance(inputs[key], bool):
            value = float(inputs[key])
            inputs[key] = int(round(value * 255)) if value <= 1.0 else int(round(value))
    return inputs


# `widgets`: ComfyUI's widget order (its editor's `widgets_values`), from INPUT_TYPES in ComfyUI's nodes.py (LoraLoader*,
# ControlNetLoader, ControlNetApply*) and comfy_extras/nodes_canny.py (Canny)
TABLE = {
    "LoraLoader": ComfyClass("LoadLora", {"model": "unet", "clip": "text_encoder", "lora_name": "name",
                                          "strength_model": "unet_strength", "strength_clip": "text_encoder_strength"},
                             ["unet", "text_encoder"], widgets=("lora_name", "strength_model", "strength_clip")),
    "LoraLoaderModelOnly": ComfyClass("LoadLoraModelOnly", {"model": "unet", "lora_name": "name", "strength_model": "strength"},
                                      ["unet"], widgets=("lora_name", "strength_model")),
    "ControlNetLoader": ComfyClass("LoadControlNet", {"control_net_name": "name"}, ["control_net"], widgets=("control_net_name",)),
    "ControlNetApply": ComfyClass("ApplyControlNet", {}, ["conditioning"], widgets=("strength",)),
    "ControlNetApplyAdvanced": ComfyClass("ApplyControlNetAdvanced", {"vae": None}, ["positive", "negative"],
                                          convert=_advanced, widgets=("strength", "start_percent", "end_percent")),
    "Canny": ComfyClass("Canny", {}, ["image"], convert=_canny, widgets=("low_threshold", "high_threshold")),
}

for _name, _spec in TABLE.items():
    register_comfy_class(_name, _spec)
