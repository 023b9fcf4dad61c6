"""Our executor events -> ComfyUI's WebSocket messages, in ComfyUI's order.

ComfyUI sends `execution_start`, always an `execution_cached` (possibly empty), `executing` per node
run, `progress`, `executed` for nodes with UI output (cached ones too), then `execution_success` /
`execution_error` / `execution_interrupted`, and finally `executing` with `node: null` once the history
entry exists. One mapper per run keeps the little state this needs.
"""

from __future__ import annotations

import struct
import time
from typing import Any

PREVIEW_IMAGE = 1
FORMAT_JPEG = 1
FORMAT_PNG = 2


def _ms() -> int:
    return int(time.time() * 1000)


def _int_if_whole(x: Any) -> Any:
    """ComfyUI sends step counts as integers."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def comfy_status(queue_remaining: int, sid: str | None = None) -> dict:
    data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": queue_remaining}}}
    if sid is not None:
        data["sid"] = sid
    return {"type": "status", "data": data}


def preview_frame(image: bytes, fmt: int = FORMAT_JPEG) -> bytes:
    """ComfyUI's binary preview: 4-byte big-endian event type 1, 4-byte format (1 JPEG, 2 PNG), image."""
    return struct.pack(">II", PREVIEW_IMAGE, fmt) + image


class ComfyMapper:
    def __init__(self, prompt_id: str) -> None:
        self.prompt_id = prompt_id
        self.cached_pending = False
        self.executed: list[str] = []

    def _msg(self, type: str, **data: Any) -> dict:
        return {"type": type, "data": {**data, "prompt_id": self.prompt_id}}

    def map(self, event: dict) -> list[dict]:
        kind = event["type"]
        out: list[dict] = []
        if kind == "run_started":
            self.cached_pending = True
            return [self._msg("execution_start", timestamp=_ms())]
        if kind == "nodes_cached":
            self.cached_pending = False
            self.executed.extend(event["nodes"])
            return [self._msg("execution_cached", nodes=list(event["nodes"]), timestamp=_ms())]
        if self.cached_pending:
            self.cached_pending = False
            out.append(self._msg("execution_cached", nodes=[], timestamp=_ms()))
        if kind == "node_started":
            nid = event["node_id"]
            out.append(self._msg("executing", node=nid, display_node=nid))
        elif kind == "node_progress" and event.get("max") is not None:  # ComfyUI has no indeterminate progress
            out.append(self._msg("progress", value=_int_if_whole(event["value"]), max=_int_if_whole(event["max"]),
                                 node=event["node_id"]))
        elif kind == "node_finished":
            nid = event["node_id"]
            if not event.get("cached"):
                self.executed.append(nid)
            ui = event.get("ui")
            if ui is not None:
                output: dict[str, Any] = {"images": ui.get("images", [])}
                if ui.get("text"):
                    output["text"] = ui["text"]
                out.append(self._msg("executed", node=nid, display_node=nid, output=output))
        elif kind == "run_finished":
            out.append(self._msg("execution_success", timestamp=_ms()))
            out.append(self.done())
        elif kind == "run_failed":
            out.append(self._msg("execution_error", node_id=event.get("node_id"), node_type=event.get("node_type"),
                                 executed=list(self.executed), exception_message=event.get("message", ""),
                                 exception_type=event.get("error_type", ""), traceback=[], current_inputs={},
                                 current_outputs={}, timestamp=_ms()))
            out.append(self.done())
        elif kind == "run_interrupted":
            out.append(self._msg("execution_interrupted", node_id=event.get("node_id"), node_type=event.get("node_type"),
                                 executed=list(self.executed), timestamp=_ms()))
            out.append(self.done())
        return out

    def done(self) -> dict:
        return {"type": "executing", "data": {"node": None, "prompt_id": self.prompt_id}}
