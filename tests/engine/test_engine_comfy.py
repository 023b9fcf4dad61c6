"""engine/compat/comfy.py: ComfyUI API prompts become our workflows (named outputs, mapped inputs)."""

import pytest

from engine.compat.comfy import ComfyTranslationError, is_comfy_prompt, prompt_to_workflow
from engine.graph import validate
from engine.registry import Registry
from engine.settings import Settings

PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact", "width": 64,
                                                  "height": 32, "crop": "center"}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}, "_meta": {"title": "Out"}},
}


def test_detects_comfy_prompts():
    assert is_comfy_prompt(PROMPT)
    assert is_comfy_prompt({"prompt": PROMPT, "client_id": "abc"})
    assert not is_comfy_prompt({"format": "latentloom.workflow", "version": 1, "nodes": {}})
    assert not is_comfy_prompt({})
    assert not is_comfy_prompt([PROMPT])
    assert not is_comfy_prompt({"1": {"inputs": {}}})


def test_translation():
    wf = prompt_to_workflow(PROMPT)
    assert wf["format"] == "latentloom.workflow" and wf["version"] == 1
    n = wf["nodes"]
    assert n["1"]["type"] == "LoadImage" and n["1"]["inputs"] == {"image": "example.png"}  # upload dropped
    assert n["2"]["type"] == "ImageResize"
    assert n["2"]["inputs"] == {"image": {"node": "1", "output": "image"}, "method": "nearest", "width": 64, "height": 32,
                                "crop": "center"}
    assert n["3"]["inputs"] == {"image": {"node": "2", "output": "image"}}
    assert n["4"]["ui"] == {"comfy_class": "SaveImage", "title": "Out"}
    assert prompt_to_workflow({"prompt": PROMPT})["nodes"].keys() == n.keys()


def test_translated_prompt_validates(tmp_path):
    (tmp_path / "example.png").write_bytes((__import__("pathlib").Path(__file__).resolve().parents[2]
                                            / "workflows" / "input" / "example.png").read_bytes())
    graph, errors = validate(prompt_to_workflow(PROMPT), Registry.default(), Settings(input_dir=tmp_path))
    assert errors == [] and graph.order == ["1", "2", "3", "4"]


def test_mask_output_index_maps_to_name():
    wf = prompt_to_workflow({
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": [1, 1]}},  # integer ids are accepted
    })
    assert wf["nodes"]["2"]["inputs"]["images"] == {"node": "1", "output": "mask"}


@pytest.mark.parametrize("prompt, says", [
    ({"1": {"class_type": "KSamplerFancy", "inputs": {}}}, "not supported"),
    ({"1": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}}}, "does not exist"),
    ({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
      "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 5]}}}, "has 2 outputs"),
])
def test_translation_errors_name_the_node(prompt, says):
    with pytest.raises(ComfyTranslationError, match=says) as info:
        prompt_to_workflow(prompt)
    assert str(info.value).startswith("node ")


def test_object_literals_are_wrapped():
    wf = prompt_to_workflow({"1": {"class_type": "SaveImage", "inputs": {"images": {"a": 1}}}})
    assert wf["nodes"]["1"]["inputs"]["images"] == {"value": {"a": 1}}
