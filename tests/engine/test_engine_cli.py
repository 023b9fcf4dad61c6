"""engine/cli.py, black-box: `loom run`, `loom validate`, `loom nodes` on workflow files (DESIGN.md section 2).

Most cases call `engine.cli.main` in-process (fast); a few run the installed `loom` script in a subprocess
to prove the entry point and the real exit codes.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main

ROOT = Path(__file__).resolve().parents[2]
LOOM = Path(sys.executable).parent / "loom"
EXAMPLE = ROOT / "workflows" / "input" / "example.png"


@pytest.fixture
def dirs(tmp_path):
    inp = tmp_path / "input"
    inp.mkdir()
    shutil.copy(EXAMPLE, inp / "example.png")
    return {"in": inp, "out": tmp_path / "out", "tmp": tmp_path}


def write(tmp_path, data, name="wf.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(p)


def basic(prefix="cli"):
    return {
        "format": "latentloom.workflow", "version": 1,
        "nodes": {
            "load": {"type": "LoadImage", "inputs": {"image": "example.png"}},
            "inv": {"type": "ImageInvert", "inputs": {"image": {"node": "load", "output": "image"}}},
            "save": {"type": "SaveImage", "inputs": {"images": {"node": "inv", "output": "image"}, "filename_prefix": prefix}},
        },
    }


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_json_shape(dirs, capsys):
    wf = write(dirs["tmp"], basic())
    code, out, err = run_cli(capsys, "run", wf, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json")
    assert code == 0, err
    doc = json.loads(out)  # exactly one JSON object on stdout
    assert set(doc) == {"status", "nodes", "outputs", "error"}
    assert doc["status"] == "success" and doc["error"] is None
    assert set(doc["nodes"]) == {"load", "inv", "save"}
    for rep in doc["nodes"].values():
        assert set(rep) == {"status", "cached", "seconds"}
        assert rep["status"] == "success" and rep["cached"] is False and isinstance(rep["seconds"], float)
    assert list(doc["outputs"]) == ["save"]
    (path,) = doc["outputs"]["save"]
    assert Path(path).is_absolute() and Path(path).is_file()
    assert Path(path).name == "cli_00001_.png"
    assert "> load (LoadImage)" in err  # progress goes to stderr


def test_run_prints_output_paths_without_json(dirs, capsys):
    wf = write(dirs["tmp"], basic("plain"))
    code, out, err = run_cli(capsys, "run", wf, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]))
    assert code == 0
    assert out.strip() == str((dirs["out"] / "plain_00001_.png").resolve())


def test_run_set_overrides(dirs, capsys):
    wf = basic()
    wf["nodes"]["crop"] = {"type": "ImageCrop", "inputs": {"image": {"node": "load", "output": "image"}}}
    wf["nodes"]["save"]["inputs"]["images"] = {"node": "crop", "output": "image"}
    path = write(dirs["tmp"], wf)
    code, out, err = run_cli(capsys, "run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json",
                             "--set", "crop.width=10", "--set", "crop.height=[7]",  # JSON: a list, which is invalid
                             "--set", "save.filename_prefix=from set")  # not JSON: a plain string
    assert code == 2
    doc = json.loads(out)
    assert doc["status"] == "error"
    assert [(e["node_id"], e["input"], e["code"]) for e in doc["error"]["errors"]] == [("crop", "height", "invalid_literal")]
    code, out, err = run_cli(capsys, "run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json",
                             "--set", "crop.width=10", "--set", "crop.height=7", "--set", "save.filename_prefix=from set")
    assert code == 0, err
    (png,) = json.loads(out)["outputs"]["save"]
    assert Path(png).name == "from set_00001_.png"
    assert Image.open(png).size == (10, 7)


@pytest.mark.parametrize("bad", ["nosuch.width=3", "crop=3", "crop.width"])
def test_run_set_bad_target_exits_2(dirs, capsys, bad):
    path = write(dirs["tmp"], basic())
    code, out, err = run_cli(capsys, "run", path, "--out", str(dirs["out"]), "--set", bad)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--set" in err


def test_validate_example_workflow(capsys):
    code, out, err = run_cli(capsys, "validate", str(ROOT / "workflows" / "image-basics.json"),
                             "--input-dir", str(ROOT / "workflows" / "input"))
    assert code == 0, err


def test_validate(dirs, capsys):
    good = write(dirs["tmp"], basic(), "good.json")
    code, out, err = run_cli(capsys, "validate", good, "--input-dir", str(dirs["in"]))
    assert code == 0 and "valid" in err
    code, out, err = run_cli(capsys, "validate", good, "--input-dir", str(dirs["in"]), "--json")
    assert code == 0 and json.loads(out) == {"valid": True, "errors": []}

    wf = basic()
    wf["nodes"]["load"]["inputs"]["image"] = "missing.png"
    wf["nodes"]["inv"]["inputs"]["image"] = {"node": "load", "output": "mask"}
    wf["nodes"]["save"]["inputs"]["filename_prefix"] = 5
    bad = write(dirs["tmp"], wf, "bad.json")
    code, out, err = run_cli(capsys, "validate", bad, "--input-dir", str(dirs["in"]))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 3
    assert any(line.startswith("node load, input image:") and "example.png" in line for line in lines)
    assert any(line.startswith("node inv, input image:") and "MASK" in line for line in lines)
    assert any(line.startswith("node save, input filename_prefix:") for line in lines)
    code, out, err = run_cli(capsys, "validate", bad, "--input-dir", str(dirs["in"]), "--json")
    doc = json.loads(out)
    assert code == 2 and doc["valid"] is False
    for e in doc["errors"]:
        assert e["node_id"] and e["input"] and e["code"] and e["message"]


BAD_FILES = {
    "not_json": ("{\"format\": ", "not valid JSON"),
    "a_list": ("[1, 2]", "must be a JSON object"),
    "wrong_format": ({"format": "something", "version": 1, "nodes": {"a": {"type": "X"}}}, "'format' must be"),
    "version_99": ({"format": "latentloom.workflow", "version": 99, "nodes": {"a": {"type": "X"}}}, "version 99 is newer"),
    "empty_graph": ({"format": "latentloom.workflow", "version": 1, "nodes": {}}, "no nodes"),
    "settings_not_object": ({"format": "latentloom.workflow", "version": 1, "nodes": {}, "settings": 5}, "no nodes"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("command", ["run", "validate"])
def test_invalid_files_exit_2_with_one_line(dirs, capsys, case, command):
    content, says = BAD_FILES[case]
    path = write(dirs["tmp"], content)
    code, out, err = run_cli(capsys, command, path, "--out", str(dirs["out"])) if command == "run" else \
        run_cli(capsys, command, path)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert says in lines[0]
    assert out == ""
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["not_json", "version_99"])
def test_invalid_files_with_json(dirs, capsys, case):
    content, says = BAD_FILES[case]
    path = write(dirs["tmp"], content)
    code, out, err = run_cli(capsys, "run", path, "--json")
    doc = json.loads(out)
    assert code == 2 and set(doc) == {"status", "nodes", "outputs", "error"} and doc["status"] == "error"
    assert says in doc["error"]["message"]
    code, out, err = run_cli(capsys, "validate", path, "--json")
    doc = json.loads(out)
    assert code == 2 and doc["valid"] is False and says in doc["errors"][0]["message"]


def test_missing_file(capsys, tmp_path):
    code, out, err = run_cli(capsys, "run", str(tmp_path / "nope.json"))
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1


def test_node_that_raises_exits_1(dirs, capsys):
    wf = basic()
    wf["nodes"]["crop"] = {"type": "ImageCrop", "inputs": {"image": {"node": "load", "output": "image"}, "x": 5000}}
    wf["nodes"]["save"]["inputs"]["images"] = {"node": "crop", "output": "image"}
    path = write(dirs["tmp"], wf)
    code, out, err = run_cli(capsys, "run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]))
    assert code == 1
    assert "crop" in err and "ImageCrop" in err and "lies outside the 96x64 image" in err
    assert "Traceback" not in err
    code, out, err = run_cli(capsys, "run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["status"] == "error"
    assert doc["error"]["node_id"] == "crop" and doc["error"]["node_type"] == "ImageCrop"
    assert "lies outside" in doc["error"]["message"]
    assert doc["nodes"]["crop"]["status"] == "error" and doc["nodes"]["load"]["status"] == "success"
    assert not dirs["out"].exists() or not list(dirs["out"].glob("*.png"))


def test_nodes_catalog(capsys):
    code, out, err = run_cli(capsys, "nodes", "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"types", "nodes"}
    save = doc["nodes"]["SaveImage"]
    assert save["output_node"] is True and save["category"] == "image"
    assert [i["name"] for i in save["inputs"]] == ["images", "filename_prefix"]
    assert any(t["name"] == "IMAGE" for t in doc["types"])
    code, out, err = run_cli(capsys, "nodes")
    assert code == 0 and "SaveImage(" in out and "image:" in out


def test_usage_errors_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["run"]) == 2
    assert main(["--help"]) == 0


def test_sigint_handler_restored(dirs, capsys):
    import signal

    before = signal.getsignal(signal.SIGINT)
    run_cli(capsys, "run", write(dirs["tmp"], basic()), "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]))
    assert signal.getsignal(signal.SIGINT) is before


# --- the installed script, in a subprocess --------------------------------------------------------------
def _loom(*argv, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(LOOM), *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_comfyui_api_prompt_runs_through_the_script(dirs):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
        "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "nearest-exact",
                                                      "width": 48, "height": 32, "crop": "disabled"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "comfy"},
              "_meta": {"title": "Save"}},
    }
    path = write(dirs["tmp"], prompt, "prompt.json")
    p = _loom("run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json", cwd=dirs["tmp"])
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    (png,) = doc["outputs"]["3"]
    img = Image.open(png)
    assert img.size == (48, 32)
    embedded = json.loads(img.text["prompt"])
    assert embedded == prompt  # the ComfyUI prompt is kept as ComfyUI wrote it
    assert json.loads(img.text["workflow"])["nodes"]["2"]["type"] == "ImageResize"


def test_comfyui_prompt_with_our_own_node_names_runs(dirs, capsys):
    """ComfyUI classes that are our nodes under their own names (ImageFlip, SplitImageWithAlpha) translate in
    `loom run` as they do on the server (they need the node registry, not only the translation table)."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png", "upload": "image"}},
        "2": {"class_type": "ImageFlip", "inputs": {"image": ["1", 0], "flip_method": "y-axis: horizontally"}},
        "3": {"class_type": "SplitImageWithAlpha", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "own"}},
    }
    path = write(dirs["tmp"], prompt, "prompt.json")
    code, out, err = run_cli(capsys, "run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json")
    assert code == 0, err
    (png,) = json.loads(out)["outputs"]["4"]
    source = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), source[:, ::-1])
    code, out, err = run_cli(capsys, "validate", path, "--json")
    assert code == 0 and json.loads(out)["valid"] is True


def test_comfyui_editor_workflow_runs_through_the_script(dirs):
    """A workflow saved from ComfyUI's editor (LiteGraph: positional widget values, a Reroute, a muted node) runs."""
    workflow = {
        "last_node_id": 5, "last_link_id": 3,
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [10, 10], "mode": 0, "inputs": [],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}, {"name": "MASK", "type": "MASK", "links": None}],
             "widgets_values": ["example.png", "image"]},
            {"id": 4, "type": "Reroute", "pos": [200, 10], "mode": 0, "inputs": [{"name": "", "type": "*", "link": 1}],
             "outputs": [{"name": "", "type": "IMAGE", "links": [2]}]},
            {"id": 2, "type": "ImageScale", "pos": [300, 10], "mode": 0,
             "inputs": [{"name": "image", "type": "IMAGE", "link": 2}],
             "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
             "widgets_values": ["nearest-exact", 40, 24, "disabled"]},
            {"id": 3, "type": "SaveImage", "pos": [600, 10], "mode": 0, "inputs": [{"name": "images", "type": "IMAGE", "link": 3}],
             "outputs": [], "widgets_values": ["litegraph"]},
            {"id": 5, "type": "PreviewImage", "pos": [600, 300], "mode": 2, "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
             "outputs": [], "widgets_values": []},
        ],
        "links": [[1, 1, 0, 4, 0, "IMAGE"], [2, 4, 0, 2, 0, "IMAGE"], [3, 2, 0, 3, 0, "IMAGE"]],
        "groups": [], "config": {}, "extra": {}, "version": 0.4,
    }
    path = write(dirs["tmp"], workflow, "comfy-editor.json")
    p = _loom("run", path, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), "--json", cwd=dirs["tmp"])
    assert p.returncode == 0, p.stderr
    (png,) = json.loads(p.stdout)["outputs"]["3"]
    assert Image.open(png).size == (40, 24) and "litegraph" in Path(png).name
    assert "5" in p.stderr and "muted" in p.stderr.lower()  # what was left out is said


def test_script_exit_codes(dirs):
    bad = write(dirs["tmp"], BAD_FILES["version_99"][0], "v99.json")
    p = _loom("run", bad, cwd=dirs["tmp"])
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "newer" in p.stderr
    wf = basic()
    wf["nodes"]["inv"] = {"type": "ImageCrop", "inputs": {"image": {"node": "load", "output": "image"}, "y": 999}}
    failing = write(dirs["tmp"], wf, "fail.json")
    p = _loom("run", failing, "--out", str(dirs["out"]), "--input-dir", str(dirs["in"]), cwd=dirs["tmp"])
    assert p.returncode == 1 and "inv (ImageCrop)" in p.stderr and "Traceback" not in p.stderr
