"""ComfyUI API prompt -> our workflow, for the editor: the translation `POST /prompt` runs (input renames,
output indices, sampler vocabularies), so a ComfyUI file or PNG dropped into the editor opens as it would run."""

from __future__ import annotations

from aiohttp import web

from ..compat.comfy import ComfyTranslationError, prompt_to_workflow
from . import models as m
from .errors import ApiError, json_response, read_model
from .routing import Route
from .state import loom_of
from .submit import comfy_problems


async def convert_comfy(request: web.Request) -> web.Response:
    body = await read_model(request, m.ComfyConvertRequest)
    prompt = body.prompt
    if not prompt:
        raise ApiError(400, "invalid_prompt", "the prompt has no nodes")
    problems = comfy_problems(prompt)
    if problems:
        raise ApiError(400, "invalid_prompt", problems[0]["message"], errors=problems)
    try:
        workflow = prompt_to_workflow(prompt, registry=loom_of(request).registry)
    except ComfyTranslationError as exc:
        err = {"node_id": exc.node_id, "input": None, "code": "comfy_translation", "message": str(exc)}
        raise ApiError(400, "invalid_prompt", str(exc), errors=[err]) from None
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise ApiError(400, "invalid_prompt", f"cannot read the prompt: {exc}") from None
    return json_response({"workflow": workflow})


ROUTES = [
    Route("POST", "/api/v1/convert/comfy", convert_comfy,
          "Translate a ComfyUI API prompt into a workflow (as POST /prompt would run it), without running it",
          body=m.ComfyConvertRequest, response=m.ConvertedWorkflow, tag="workflows"),
]
