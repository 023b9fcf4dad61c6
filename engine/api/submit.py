"""From a request's workflow (ours or a ComfyUI prompt) to a validated, queued run.

Shared by `POST /api/v1/runs` and ComfyUI's `POST /prompt`: translate, validate against the live
registry and folders, and refuse with every error at once. Validation happens again when the run
starts (an input file may be gone by then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..compat.comfy import ComfyTranslationError, is_comfy_prompt, prompt_to_workflow
from .state import LoomApp


class Rejected(Exception):
    """An invalid workflow: `errors` in the API's shape `{node_id, input, code, message}`."""

    def __init__(self, message: str, errors: list[dict], type: str = "invalid_workflow") -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors
        self.type = type


@dataclass
class Prepared:
    workflow: dict
    prompt: dict | None
    targets: list[str]


def comfy_problems(prompt: dict) -> list[dict]:
    """Entries ComfyUI itself would refuse before translating (not objects, no class_type)."""
    problems = []
    for nid, entry in prompt.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str):
            problems.append({"node_id": str(nid), "input": None, "code": "missing_class_type",
                             "message": f"node {nid} is missing the class_type property"})
        elif "inputs" in entry and not isinstance(entry["inputs"], dict):
            problems.append({"node_id": str(nid), "input": None, "code": "bad_node", "message": f"node {nid}: 'inputs' must be an object"})
    return problems


def looks_comfy(data: dict) -> bool:
    return "format" not in data and bool(data) and all(isinstance(v, dict) for v in data.values()) and (
        is_comfy_prompt(data) or any("class_type" in v for v in data.values()))


def prepare(loom: LoomApp, data: dict, outputs: list[str] | None, force_comfy: bool = False) -> Prepared:
    prompt = None
    workflow: Any = data
    if force_comfy or looks_comfy(data):
        problems = comfy_problems(data)
        if problems:
            raise Rejected(problems[0]["message"], problems, "invalid_prompt")
        try:
            workflow = prompt_to_workflow(data, registry=loom.registry)
        except ComfyTranslationError as exc:
            err = {"node_id": exc.node_id, "input": None, "code": "comfy_translation", "message": str(exc)}
            raise Rejected(str(exc), [err], "invalid_prompt") from None
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            err = {"node_id": None, "input": None, "code": "comfy_translation", "message": f"cannot read the prompt: {exc}"}
            raise Rejected(err["message"], [err], "invalid_prompt") from None
        prompt = data
    graph, errors = loom.executor.validate(workflow, outputs)
    if graph is None:
        dumped = [e.model_dump() for e in errors]
        head = "; ".join(str(e) for e in errors[:3]) + (f" (+{len(errors) - 3} more)" if len(errors) > 3 else "")
        raise Rejected(f"invalid workflow: {head}", dumped)
    return Prepared(workflow=graph.raw if prompt is None else workflow, prompt=prompt, targets=list(graph.targets))
