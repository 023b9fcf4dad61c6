"""A GPU out-of-memory error fails the node with a clear message, and the executor runs the next workflow."""

from __future__ import annotations

import torch

from engine.executor import Executor
from engine.node import node
from engine.registry import Registry
from engine.settings import Settings
from engine.types import IMAGE

STATE = {"oom": True}


@node(name="TestHungryNode", output_node=True)
def hungry(images: IMAGE) -> None:
    if STATE["oom"]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.11 GiB total capacity)")
    from engine.node import NodeUI

    return NodeUI(text=["ok"])


def test_oom_names_the_node_and_suggests_what_to_do(tmp_path):
    reg = Registry.default()
    reg.add(hungry)
    ex = Executor(reg, Settings(output_dir=tmp_path, input_dir=tmp_path, device="cpu"))
    wf = {"format": "latentloom.workflow", "version": 1, "nodes": {
        "plot": {"type": "PlotNoiseSchedules"},
        "eat": {"type": "TestHungryNode", "inputs": {"images": {"node": "plot", "output": "image"}}}}}
    r = ex.run(wf)
    assert r.status == "error" and r.error["node_id"] == "eat" and r.error["error_type"] == "OutOfMemoryError"
    assert r.error["message"].startswith("out of GPU memory") and "smaller size" in r.error["message"]
    STATE["oom"] = False
    again = ex.run(wf)
    assert again.status == "success" and again.nodes["plot"].cached
