"""engine/workflow.py: the envelope, migrations, the JSON schema, links vs wrapped literal objects."""

import json

import pytest

import loomtest_nodes as tn
from engine import workflow as W
from engine.graph import validate
from engine.workflow import Link, WorkflowError, check_envelope, parse_input, read_json


def good(**over):
    data = {"format": W.FORMAT, "version": 1, "nodes": {"a": {"type": "Const"}}}
    data.update(over)
    return data


@pytest.mark.parametrize("data, match", [
    ([1, 2], "must be a JSON object, got list"),
    ("text", "must be a JSON object, got str"),
    (None, "must be a JSON object, got NoneType"),
    ({"version": 1, "nodes": {}}, "'format' must be 'latentloom.workflow', got None"),
    (good(format="comfyui"), "'format' must be 'latentloom.workflow', got 'comfyui'"),
    (good(version=99), "version 99 is newer than this Latent Loom reads"),
    (good(version=0), "version 0 does not exist"),
    (good(version=-3), "does not exist"),
    (good(version="1"), "'version' must be an integer"),
    (good(version=1.0), "'version' must be an integer"),
    (good(version=True), "'version' must be an integer"),
    ({"format": W.FORMAT, "nodes": {"a": {}}}, "'version' must be an integer, got None"),
    (good(nodes=[]), "'nodes' must be an object"),
    (good(nodes=None), "'nodes' must be an object"),
    (good(nodes={}), "no nodes"),
])
def test_envelope_errors(data, match):
    with pytest.raises(WorkflowError, match=match):
        check_envelope(data)
    # the same through validation: one structured error, never an exception
    graph, errors = validate(data, tn.registry())
    assert graph is None and len(errors) == 1
    assert errors[0].code == "invalid_workflow" and match.split(",")[0].strip("'") in errors[0].message


def test_envelope_accepts_current_version_and_does_not_mutate():
    data = good()
    out = check_envelope(data)
    assert out["version"] == 1 and out["nodes"] == data["nodes"]


@pytest.fixture
def version2(monkeypatch):
    """Pretend the format is at version 2, whose migration renames Const's input `value` -> `v`... and back."""
    saved = dict(W.MIGRATIONS)
    monkeypatch.setattr(W, "CURRENT_VERSION", 2)

    def v1_to_v2(data):
        for entry in data["nodes"].values():
            if entry.get("type") == "OldConst":
                entry["type"] = "Const"
                entry["inputs"] = {"value": entry.pop("inputs", {}).get("number", 0)}
        data.setdefault("ui", {})["migrated_from"] = 1
        return data

    W.MIGRATIONS[1] = v1_to_v2
    yield
    W.MIGRATIONS.clear()
    W.MIGRATIONS.update(saved)


def test_migration_upgrades_an_old_file(version2):
    old = {"format": W.FORMAT, "version": 1, "nodes": {
        "c": {"type": "OldConst", "inputs": {"number": 7}},
        "s": {"type": "Show", "inputs": {"value": tn.ln("c", "value")}},
    }}
    snapshot = json.loads(json.dumps(old))
    new = check_envelope(old)
    assert new["version"] == 2
    assert new["nodes"]["c"] == {"type": "Const", "inputs": {"value": 7}}
    assert new["ui"]["migrated_from"] == 1
    assert old == snapshot  # migrating never edits the caller's document
    graph, errors = validate(old, tn.registry())
    assert errors == [] and graph.nodes["c"].literals == {"value": 7}
    assert graph.raw["version"] == 2
    # version 2 files are read as they are; version 3 is newer
    assert check_envelope({**new})["version"] == 2
    with pytest.raises(WorkflowError, match="newer"):
        check_envelope({**new, "version": 3})


def test_missing_migration_is_a_workflow_error(monkeypatch):
    monkeypatch.setattr(W, "CURRENT_VERSION", 3)
    saved = dict(W.MIGRATIONS)
    W.MIGRATIONS.clear()
    try:
        with pytest.raises(WorkflowError, match="version 1"):
            check_envelope(good())
    finally:
        W.MIGRATIONS.update(saved)


def test_migrations_table_restored():
    assert W.CURRENT_VERSION == 1 and 1 not in W.MIGRATIONS


def test_json_schema_export():
    schema = W.json_schema()
    json.dumps(schema)
    assert schema["type"] == "object"
    props = schema["properties"]
    assert {"format", "version", "nodes", "ui"} <= set(props)
    assert props["format"].get("const") == W.FORMAT or props["format"].get("enum") == [W.FORMAT]
    node_entry = schema["$defs"]["NodeEntry"]
    assert {"type", "inputs", "mode", "body", "ui"} <= set(node_entry["properties"])
    assert "Body" in schema["$defs"]


def test_pydantic_model_reads_a_workflow_file():
    data = read_json("workflows/image-basics.json")
    model = W.Workflow.model_validate(data)
    assert model.nodes["save"].type == "SaveImage"
    assert model.to_json()["nodes"]["resize"]["inputs"]["width"] == 128


def test_links_vs_wrapped_literal_objects():
    kind, value = parse_input({"node": "a", "output": "value"})
    assert kind == "link" and value == Link(node="a", output="value")
    assert parse_input({"value": {"node": "a", "output": "value"}}) == ("literal", {"node": "a", "output": "value"})
    assert parse_input({"value": {"x": 1}}) == ("literal", {"x": 1})
    assert parse_input({"value": 3}) == ("literal", 3)
    assert parse_input([1, 2]) == ("literal", [1, 2])
    assert parse_input(None) == ("literal", None)
    assert parse_input({"x": 1})[0] == "bad"
    assert parse_input({"node": "a"})[0] == "bad"
    assert parse_input({"node": "a", "output": "b", "extra": 1})[0] == "bad"
    assert parse_input({"node": 1, "output": "b"})[0] == "bad"
    assert W.is_link(W.link("a", "b")) and not W.is_link({"value": 1})


def test_wrapped_object_reaches_the_node_as_a_literal(executor):
    result = executor.run(tn.wf({
        "s": {"type": "Show", "inputs": {"value": {"value": {"node": "x", "output": "y"}}}},
    }))
    assert result.status == "success"
    assert executor.cache.peek(result.signatures["s"])["value"] == {"node": "x", "output": "y"}


def test_read_json_errors(tmp_path):
    with pytest.raises(WorkflowError, match="no such file"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorkflowError, match="not valid JSON.*line 1"):
        read_json(bad)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(WorkflowError, match="cannot read"):
        read_json(binary)
