"""Workflows the server tests submit (ours and ComfyUI API format), built on the test nodes."""

from __future__ import annotations


def wf(nodes: dict) -> dict:
    return {"format": "latentloom.workflow", "version": 1, "nodes": nodes, "ui": {}}


def count_flow(value: int = 0, steps: int = 1, delay: float = 0.0, preview: bool = False, label: str = "value") -> dict:
    """SlowCount -> ShowValue: `steps` progress steps of `delay` seconds, then a text output."""
    return wf({
        "count": {"type": "SlowCount", "inputs": {"steps": steps, "delay": delay, "value": value, "preview": preview}},
        "show": {"type": "ShowValue", "inputs": {"value": {"node": "count", "output": "int"}, "label": label}},
    })


def png_flow(value: int = 0, steps: int = 1, delay: float = 0.0) -> dict:
    return wf({
        "count": {"type": "SlowCount", "inputs": {"steps": steps, "delay": delay, "value": value}},
        "png": {"type": "WritePng", "inputs": {"value": {"node": "count", "output": "int"}}},
    })


def fail_flow(message: str = "boom") -> dict:
    return wf({
        "bad": {"type": "FailNode", "inputs": {"message": message}},
        "show": {"type": "ShowValue", "inputs": {"value": {"node": "bad", "output": "int"}}},
    })


def image_flow(width: int = 32, height: int = 24) -> dict:
    """LoadImage -> ImageResize -> PreviewImage and SaveImage (the core image nodes, torch tensors)."""
    return wf({
        "load": {"type": "LoadImage", "inputs": {"image": "example.png"}},
        "resize": {"type": "ImageResize", "inputs": {"image": {"node": "load", "output": "image"}, "width": width, "height": height}},
        "preview": {"type": "PreviewImage", "inputs": {"images": {"node": "resize", "output": "image"}}},
        "save": {"type": "SaveImage", "inputs": {"images": {"node": "resize", "output": "image"}, "filename_prefix": "flow"}},
    })


def comfy_count(value: int = 0, steps: int = 1, delay: float = 0.0) -> dict:
    """A ComfyUI API prompt that uses our node names (as /object_info lists them)."""
    return {
        "1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": delay, "value": value}},
        "2": {"class_type": "ShowValue", "inputs": {"value": ["1", 0]}},
    }


def comfy_image(width: int = 32, height: int = 24, prefix: str = "comfy") -> dict:
    """A ComfyUI API prompt with ComfyUI class names: LoadImage -> ImageScale -> SaveImage."""
    return {
        "10": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
        "11": {"class_type": "ImageScale", "inputs": {"image": ["10", 0], "upscale_method": "bilinear", "width": width,
                                                      "height": height, "crop": "disabled"}},
        "12": {"class_type": "SaveImage", "inputs": {"images": ["11", 0], "filename_prefix": prefix}},
    }
