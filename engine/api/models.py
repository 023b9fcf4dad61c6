"""Request and response models of the HTTP API: they validate bodies and generate the OpenAPI document.

Native request bodies forbid unknown fields (a typo is a clear 400, not a silently ignored option);
ComfyUI request bodies allow them, because ComfyUI clients send fields we have no use for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,128}$"

RunStatus = Literal["queued", "running", "success", "error", "interrupted", "cancelled"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- errors --------------------------------------------------------------------------------------------
class ErrorInfo(BaseModel):
    type: str
    message: str


class GraphErrorOut(BaseModel):
    node_id: str | None = None
    input: str | None = None
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorInfo
    errors: list[GraphErrorOut] = Field(default_factory=list)


# -- catalog and validation ------------------------------------------------------------------------------
class Catalog(BaseModel):
    types: list[dict[str, Any]]
    nodes: dict[str, dict[str, Any]] = Field(description="node type name -> NodeSchema (see `loom nodes --json`)")


class ValidateRequest(_Strict):
    workflow: dict[str, Any] = Field(description="a workflow (format latentloom.workflow) or a ComfyUI API prompt")
    outputs: list[str] | None = Field(None, description="output node ids to plan for (default: every output node)")


class ValidateResponse(BaseModel):
    valid: bool
    errors: list[GraphErrorOut]


# -- runs ------------------------------------------------------------------------------------------------
class SubmitRun(_Strict):
    workflow: dict[str, Any] = Field(description="a workflow (format latentloom.workflow) or a ComfyUI API prompt")
    outputs: list[str] | None = Field(None, description="output node ids to run (default: every output node)")
    client_id: str | None = Field(None, pattern=CLIENT_ID_PATTERN, description="WebSocket client that gets the events")
    run_id: str | None = Field(None, pattern=RUN_ID_PATTERN, description="choose the run id (409 if it exists)")
    front: bool = Field(False, description="put the run at the front of the queue")


class RunAccepted(BaseModel):
    run_id: str
    number: int


class NodeStatus(BaseModel):
    status: str = Field(description="pending | running | success | cached | error | interrupted")
    cached: bool = False
    seconds: float = 0.0


class FileRefOut(BaseModel):
    filename: str
    subfolder: str = ""
    type: Literal["output", "temp", "input"] = "output"


class NodeOutputs(BaseModel):
    images: list[FileRefOut] = Field(default_factory=list)
    text: list[str] = Field(default_factory=list)


class RunError(BaseModel):
    node_id: str | None = None
    node_type: str | None = None
    error_type: str
    message: str
    errors: list[GraphErrorOut] = Field(default_factory=list)


class RunRecord(BaseModel):
    run_id: str
    number: int
    status: RunStatus
    workflow: dict[str, Any] | None = Field(None, description="absent in history listings")
    client_id: str | None = None
    created: float
    started: float | None = None
    finished: float | None = None
    nodes: dict[str, NodeStatus] = Field(default_factory=dict)
    outputs: dict[str, NodeOutputs] = Field(default_factory=dict)
    error: RunError | None = None


class RunSummary(BaseModel):
    run_id: str
    number: int
    status: RunStatus
    created: float
    client_id: str | None = None
    node_count: int


class QueueState(BaseModel):
    running: list[RunSummary]
    pending: list[RunSummary]


class Cancelled(BaseModel):
    cancelled: bool


class ClearedCount(BaseModel):
    cancelled: int


class MoveRequest(_Strict):
    position: int = Field(ge=0, description="0 = next to run; clamped to the end of the queue")


class InterruptRequest(_Strict):
    run_id: str | None = Field(None, description="interrupt only if this run is the one running")


class InterruptResult(BaseModel):
    interrupted: bool
    run_id: str | None = None


class HistoryQuery(_Strict):
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=1000)
    status: RunStatus | None = None


class HistoryPage(BaseModel):
    items: list[RunRecord]
    total: int


class Deleted(BaseModel):
    deleted: int


# -- files -----------------------------------------------------------------------------------------------
class ViewQuery(_Loose):
    filename: str = Field(min_length=1, max_length=1024)
    subfolder: str = Field("", max_length=1024)
    type: Literal["output", "input", "temp"] = "output"
    channel: Literal["rgb", "a", "rgba"] | None = Field(
        None, description="images only: rgb drops the alpha (PNG), a gives the alpha as the alpha of a black RGBA "
        "image (PNG), rgba (or none) sends the file as it is")
    preview: str | None = Field(
        None, max_length=32, description="images only: 'webp;90' or 'jpeg;75' (format;quality 1..100, default 90) "
        "re-encodes the image; JPEG with channel a or rgba gives WebP, which keeps the alpha")


class UploadForm(_Strict):
    """Multipart fields of an upload (documentation: the body is multipart/form-data)."""

    image: bytes = Field(description="the image file (PNG, JPEG, WebP, ...); Pillow must be able to open it")
    kind: Literal["image", "mask"] = "image"
    subfolder: str = ""
    type: Literal["input", "temp", "output"] = "input"
    overwrite: bool = False


class UploadMaskForm(UploadForm):
    """Multipart fields of ComfyUI's mask upload: `image` is the mask editor's image, whose alpha is kept."""

    original_ref: str = Field(description='JSON {"filename", "subfolder", "type"} of the image the mask belongs '
                              "to (type input, output (default) or temp; 'name.png [input]' also names the type)")


class UploadResult(BaseModel):
    name: str
    subfolder: str
    type: str


# -- cached outputs --------------------------------------------------------------------------------------
class OutputPreview(BaseModel):
    type: str = Field(description="the socket type of the output")
    kind: Literal["image", "latent", "tensor", "value", "handle"]
    summary: dict[str, Any] | None = Field(None, description="{shape, dtype, min, max, mean, device} for tensors")
    value: Any = Field(None, description="the value itself, for primitives")
    preview_url: str | None = None


class NodeOutputsPreview(BaseModel):
    node_id: str
    available: bool = Field(description="false when the outputs are no longer in the cache (evicted, restarted)")
    outputs: dict[str, OutputPreview]


class PreviewQuery(_Strict):
    index: int = Field(0, ge=0, le=4096)
    size: int = Field(256, ge=16, le=2048)


# -- workflow library ------------------------------------------------------------------------------------
class WorkflowItem(BaseModel):
    path: str
    source: Literal["builtin", "user"]
    modified: float


class WorkflowList(BaseModel):
    items: list[WorkflowItem]


class ComfyConvertRequest(_Strict):
    """One of the two: ComfyUI's API prompt or its editor (LiteGraph) workflow."""

    prompt: dict[str, Any] | None = Field(None, description="a ComfyUI API-format prompt: {node id: {class_type, inputs}}")
    workflow: dict[str, Any] | None = Field(
        None, description="a ComfyUI editor (LiteGraph) workflow, as ComfyUI saves it: {nodes: [...], links: [...]}")


class ConvertedWorkflow(BaseModel):
    workflow: dict[str, Any] = Field(description="the version-1 workflow, node ids kept (positions in ui.pos for an editor workflow)")
    warnings: list[str] = Field(default_factory=list, description="what was left out or could not be read exactly (muted nodes, ...)")


class WorkflowQuery(_Strict):
    source: Literal["builtin", "user"] | None = None


class SavedWorkflow(BaseModel):
    path: str


class RenameRequest(_Strict):
    to: str = Field(min_length=1, max_length=512)


# -- models and system -----------------------------------------------------------------------------------
class ModelFile(BaseModel):
    name: str
    size: int
    modified: float
    format: str = Field(description="safetensors | diffusers | ckpt | pt | bin | pth")
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelFolders(BaseModel):
    folders: dict[str, list[ModelFile]]


class ModelList(BaseModel):
    items: list[ModelFile]


class Device(BaseModel):
    name: str
    type: str
    index: int | None = None
    vram_total: int = 0
    vram_free: int = 0
    torch_vram_total: int = 0
    torch_vram_free: int = 0


class SystemStats(BaseModel):
    system: dict[str, Any]
    devices: list[Device]
    versions: dict[str, str | None]
    memory: dict[str, int]


# -- ComfyUI ---------------------------------------------------------------------------------------------
class ComfyPrompt(_Loose):
    prompt: dict[str, Any] = Field(description="a ComfyUI API-format prompt (or one of our workflows)")
    client_id: str | None = Field(None, pattern=CLIENT_ID_PATTERN)
    prompt_id: str | None = Field(None, pattern=RUN_ID_PATTERN)
    extra_data: dict[str, Any] = Field(default_factory=dict)
    front: bool = False
    number: float | None = None
    partial_execution_targets: list[str] | None = None


class ComfyPromptAccepted(BaseModel):
    prompt_id: str
    number: int
    node_errors: dict[str, Any]


class ComfyQueueAction(_Loose):
    clear: bool = False
    delete: list[str] = Field(default_factory=list)


class ComfyInterrupt(_Loose):
    prompt_id: str | None = None


class ComfyHistoryQuery(_Loose):
    max_items: int | None = Field(None, ge=0)
    offset: int = Field(-1, ge=-1, description="-1: the last max_items")


class ComfyQueue(BaseModel):
    queue_running: list[list[Any]]
    queue_pending: list[list[Any]]
