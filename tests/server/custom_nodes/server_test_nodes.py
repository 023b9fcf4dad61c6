"""Nodes that only the server tests load (`--custom-nodes tests/server/custom_nodes`): slow, failing,
text-showing and PNG-writing nodes that need no torch, so a test server starts and runs in milliseconds."""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import Field

from engine.node import FileRef, NodeContext, NodeError, NodeUI, node
from engine.types import INT


@node(category="testing")
def slow_count(ctx: NodeContext, steps: Annotated[int, Field(5, ge=1, le=100000)] = 5,
               delay: Annotated[float, Field(0.05, ge=0.0, le=60.0)] = 0.05, value: int = 0,
               preview: bool = False) -> INT:
    """Count `steps` steps of `delay` seconds, reporting progress (and a tiny preview) at each step."""
    for i in range(steps):
        time.sleep(delay)
        img = None
        if preview:
            from PIL import Image

            img = Image.new("RGB", (32, 32), (i * 20 % 256, 80, 160))
        ctx.progress(i + 1, steps, preview=img)
    return value + steps


@node(category="testing")
def fail_node(value: int = 0, message: str = "this node always fails") -> INT:
    """Raise a node error on purpose."""
    raise NodeError(message)


@node(category="testing", output_node=True)
def show_value(value: INT, label: str = "value") -> NodeUI:
    """Show a number as text (an output node without files)."""
    return NodeUI(text=[f"{label}={value}"])


@node(category="testing", output_node=True)
def write_png(ctx: NodeContext, value: INT, prefix: str = "test") -> NodeUI:
    """Write a small PNG whose colour encodes the value (an output node with a file, without torch)."""
    from PIL import Image

    folder = ctx.folders.output
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}_{value:05d}_{ctx.run_id[:8]}.png"
    Image.new("RGB", (8, 8), (value % 256, 0, 0)).save(folder / name)
    return NodeUI(images=[FileRef(filename=name, subfolder="", type="output")])


@node(category="testing")
def exit_node(value: int = 0) -> INT:
    """Call sys.exit inside a run (the worker must survive it)."""
    raise SystemExit(3)
