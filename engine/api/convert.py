"""ComfyUI files -> our workflow, for the editor: the translation `POST /prompt` runs (input renames, output
indices, sampler vocabularies), so a ComfyUI file or PNG dropped into the editor opens as it would run.

Both of ComfyUI's shapes are accepted: the API prompt (`{"prompt": {id: {class_type, inputs}}}`) and the editor's
LiteGraph workflow (`{"workflow": {nodes, links}}`), which is first rebuilt into the prompt ComfyUI's frontend
would send (widget values by ComfyUI's widget order, Reroutes and PrimitiveNodes resolved), keeping its positions.
"""

from __future__ import annotations

from aiohttp import web

from ..compat.comfy import ComfyTranslationError, is_comfy_prompt, is_litegraph_workflow, litegraph_to_workflow, prompt_to_workflow
from . import models as m
from .errors import ApiError, json_response, read_model
from .routing import Route
from .state import loom_of
from .submit import comfy_problems


def _translation_error(exc: ComfyTranslationError) -> ApiError:
    err = {"node_id": exc.node_id, "input": None, "code": "comfy_translation", "message": str(exc)}
    return ApiError(400, "invalid_prompt", str(exc), errors=[err])


def _from_prompt(request: web.Request, prompt: dict) -> dict:
    if not prompt:
        raise ApiError(400, "invalid_prompt", "the prompt has no nodes")
    problems = comfy_problems(prompt)
    if problems:
        raise ApiError(400, "invalid_prompt", problems[0]["message"], errors=problems)
    try:
        return prompt_to_workflow(prompt, registry=loom_of(request).registry)
    except ComfyTranslationError as exc:
        raise _translation_error(exc) from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ApiError(400, "invalid_prompt", f"cannot read the prompt: {exc}") from None


def _from_litegraph(request: web.Request, workflow: dict) -> tuple[dict, list[str]]:
    if not is_litegraph_workflow(workflow):
        raise ApiError(400, "invalid_prompt", "not a ComfyUI editor workflow: it has no 'nodes' list")
    if not workflow["nodes"]:
        raise ApiError(400, "invalid_prompt", "the workflow has no nodes")
    try:
        return litegraph_to_workflow(workflow, registry=loom_of(request).registry)
    except ComfyTranslationError as exc:
        raise _translation_error(exc) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ApiError(400, "invalid_prompt", f"cannot read the workflow: {exc}") from None


async def convert_comfy(request: web.Request) -> web.Response:
    body = await read_model(request, m.ComfyConvertRequest)
    if (body.prompt is None) == (body.workflow is None):
        raise ApiError(400, "invalid_request", "give either 'prompt' (a ComfyUI API prompt) or 'workflow' (a ComfyUI editor workflow)")
    if body.prompt is not None:
        return json_response({"workflow": _from_prompt(request, body.prompt), "warnings": []})
    assert body.workflow is not None
    if is_comfy_prompt(body.workflow):  # an API prompt sent as `workflow`: translate it all the same
        return json_response({"workflow": _from_prompt(request, body.workflow), "warnings": []})
    workflow, warnings = _from_litegraph(request, body.workflow)
    return json_response({"workflow": workflow, "warnings": warnings})


ROUTES = [
    Route("POST", "/api/v1/convert/comfy", convert_comfy,
          "Translate a ComfyUI API prompt or editor (LiteGraph) workflow into a workflow (as POST /prompt would run it), "
          "without running it",
          body=m.ComfyConvertRequest, response=m.ConvertedWorkflow, tag="workflows"),
]
