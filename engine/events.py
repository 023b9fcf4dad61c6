"""Every event the executor emits, as typed models in one place.

The CLI prints them, the server forwards them over the WebSocket (and translates them into ComfyUI's
messages), tests assert on them. `type` is the discriminator in their JSON form.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, Field


class Event(BaseModel):
    run_id: str


class RunStarted(Event):
    type: Literal["run_started"] = "run_started"
    nodes: list[str] = Field(description="the nodes this run will execute or take from the cache, in order")


class NodesCached(Event):
    type: Literal["nodes_cached"] = "nodes_cached"
    nodes: list[str]


class NodeStarted(Event):
    type: Literal["node_started"] = "node_started"
    node_id: str
    node_type: str


class NodeProgress(Event):
    type: Literal["node_progress"] = "node_progress"
    node_id: str
    value: float
    max: float | None = None
    preview: Any = Field(None, exclude=True, description="an image to show while the node runs (not serialised)")
    text: str | None = Field(None, description="a status line, e.g. 'compiling UNet for 512x512 batch 1 (first time, ~70 s)'")


class NodeWarning(Event):
    type: Literal["node_warning"] = "node_warning"
    node_id: str
    message: str


class NodeFinished(Event):
    type: Literal["node_finished"] = "node_finished"
    node_id: str
    node_type: str
    seconds: float
    cached: bool = False
    ui: dict | None = None


class RunFinished(Event):
    type: Literal["run_finished"] = "run_finished"
    seconds: float


class RunFailed(Event):
    type: Literal["run_failed"] = "run_failed"
    node_id: str | None
    node_type: str | None
    error_type: str
    message: str
    errors: list[dict] = Field(default_factory=list, description="validation errors, when the run never started")


class RunInterrupted(Event):
    type: Literal["run_interrupted"] = "run_interrupted"
    node_id: str | None
    node_type: str | None = None


AnyEvent = Union[RunStarted, NodesCached, NodeStarted, NodeProgress, NodeWarning, NodeFinished, RunFinished, RunFailed, RunInterrupted]
