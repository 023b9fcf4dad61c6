"""The workflow file (format `latentloom.workflow`, version 1): pydantic models, loading, migrations.

    {"format": "latentloom.workflow", "version": 1,
     "nodes": {"ckpt": {"type": "LoadCheckpoint", "inputs": {"name": "loom-shapes"}}, ...},
     "ui": {}}

An input is a literal or a link `{"node": ID, "output": NAME}`; a literal object is wrapped as
`{"value": {...}}` so it can never be mistaken for a link. A loop node carries its body graph in `body`
(the same shape, recursively). `ui` never changes results. Older versions are migrated on load by the
functions in `MIGRATIONS`, so version-1 files keep working when version 2 arrives.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = "latentloom.workflow"
CURRENT_VERSION = 1


class WorkflowError(ValueError):
    """The file as a whole is unusable (not JSON, wrong format or version): one line for the user."""


class Link(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str
    output: str


class NodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(description="Node type name (CamelCase), e.g. LoadCheckpoint")
    inputs: dict[str, Any] = Field(default_factory=dict, description="Literals, links {node, output}, or {value: object}")
    mode: Literal["normal", "bypass"] = Field("normal", description="bypass: pass the first input of each output's type through")
    body: "Body | None" = Field(None, description="For loop nodes: the graph run once per iteration")
    ui: dict[str, Any] = Field(default_factory=dict, description="Editor-only data (position, title, colour); never changes results")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: dict[str, NodeEntry] = Field(default_factory=dict)
    ui: dict[str, Any] = Field(default_factory=dict)


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["latentloom.workflow"] = FORMAT
    version: Literal[1] = CURRENT_VERSION
    nodes: dict[str, NodeEntry] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict, description="Per-workflow run settings, e.g. {\"fast\": true}")
    ui: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> dict:
        return self.model_dump(mode="json", exclude_defaults=False)


NodeEntry.model_rebuild()


def classify_input(value: Any) -> tuple[str, Any]:
    """Classify a raw input value: ("link", (node, output)) | ("literal", value) | ("bad", reason).

    `parse_input` with the link as a plain tuple: the validator calls this once per input.
    """
    if isinstance(value, dict):
        n = len(value)
        if n == 2 and "node" in value and "output" in value:
            node, output = value["node"], value["output"]
            if isinstance(node, str) and isinstance(output, str):
                return "link", (node, output)
            return "bad", "a link needs string 'node' and 'output'"
        if n == 1 and "value" in value:
            return "literal", value["value"]
        return "bad", "an object must be a link {node, output} or a wrapped literal {value: ...}"
    return "literal", value


def parse_input(value: Any) -> tuple[str, Any]:
    """Classify a raw input value: ("link", Link) | ("literal", value) | ("bad", reason)."""
    kind, v = classify_input(value)
    if kind == "link":
        return kind, Link(node=v[0], output=v[1])
    return kind, v


def is_link(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 2 and "node" in value and "output" in value


def link(node: str, output: str) -> dict:
    return {"node": node, "output": output}


# version -> function taking the raw dict of that version and returning the raw dict of version+1
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}


def migrate(data: dict) -> dict:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise WorkflowError(f"'version' must be an integer, got {version!r}")
    if version > CURRENT_VERSION:
        raise WorkflowError(f"workflow version {version} is newer than this Latent Loom reads (up to {CURRENT_VERSION})")
    if version < 1:
        raise WorkflowError(f"workflow version {version} does not exist (versions start at 1)")
    if version < CURRENT_VERSION:
        data = copy.deepcopy(data)  # migrations edit in place: never the caller's document
    while version < CURRENT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise WorkflowError(f"workflow version {version} cannot be read: no migration to version {version + 1}")
        data = step(data)
        version += 1
        data["version"] = version
    return data


def check_envelope(data: Any) -> dict:
    """Check what must hold before node-level validation: an object of our format and a known version."""
    if not isinstance(data, dict):
        raise WorkflowError(f"a workflow must be a JSON object, got {type(data).__name__}")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise WorkflowError(f"'format' must be {FORMAT!r}, got {fmt!r}")
    data = migrate(dict(data))
    if not isinstance(data.get("nodes"), dict):
        raise WorkflowError("'nodes' must be an object of node id -> node")
    if not data["nodes"]:
        raise WorkflowError("the workflow has no nodes")
    return data


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"{p}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def json_schema() -> dict:
    """The JSON Schema of the workflow file (served by the API, used by editors and linters)."""
    return Workflow.model_json_schema()
