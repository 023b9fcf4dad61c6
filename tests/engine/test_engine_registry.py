"""engine/registry.py: aliases, duplicates, custom node folders, the catalog."""

import json
import textwrap

import pytest

import loomtest_nodes as tn
from engine.graph import validate
from engine.node import NodeDeclarationError, node
from engine.registry import Registry
from engine.types import INT


def test_renamed_node_keeps_its_old_name():
    @node(name="NewAdder", aliases=["OldAdder", "AncientAdder"], output_name="value")
    def new_adder(a: int, b: int = 1) -> INT:
        return a + b

    reg = Registry([new_adder, tn.show])
    assert reg.get("OldAdder") is reg.get("NewAdder") is reg.get("AncientAdder")
    assert "OldAdder" in reg and "Nope" not in reg
    assert reg.names() == ["NewAdder", "Show"]  # aliases are not listed as extra types
    # an old workflow that uses the old name still validates, and runs as the new type
    graph, errors = validate(tn.wf({
        "a": {"type": "OldAdder", "inputs": {"a": 1}},
        "s": {"type": "Show", "inputs": {"value": tn.ln("a", "value")}},
    }), reg)
    assert errors == []
    assert graph.nodes["a"].type == "NewAdder"
    assert reg.catalog_json()["nodes"]["NewAdder"]["aliases"] == ["OldAdder", "AncientAdder"]


def test_duplicates_are_rejected():
    @node(name="Const", output_name="value")
    def other_const(value: int = 0) -> INT:
        return value

    reg = Registry([tn.const])
    with pytest.raises(NodeDeclarationError, match="declared twice"):
        reg.add(other_const)
    reg.add(tn.const)  # the same declaration twice is harmless (a module imported twice)

    @node(name="Fresh", aliases=["Const"])
    def alias_clash(x: int) -> INT:
        return x

    with pytest.raises(NodeDeclarationError, match="declared twice"):
        reg.add(alias_clash)

    @node(name="OldAdd", output_name="value")
    def name_clash_with_alias(x: int) -> INT:
        return x

    @node(name="NewAdd", aliases=["OldAdd"])
    def new_add(x: int) -> INT:
        return x

    reg2 = Registry([new_add])
    with pytest.raises(NodeDeclarationError, match="declared twice"):
        reg2.add(name_clash_with_alias)


def test_add_rejects_undeclared_functions():
    def plain(x: int) -> int:
        return x

    with pytest.raises(NodeDeclarationError, match="not a declared node"):
        Registry([plain])


GOOD = '''
from engine.node import node
from engine.types import INT

@node(name="CustomDouble", output_name="value")
def custom_double(x: int) -> INT:
    return 2 * x
'''

BROKEN_IMPORT = '''
import this_module_does_not_exist_anywhere
'''

BROKEN_DECLARATION = '''
from engine.node import node

@node
def lower_case_is_fine_but_this_is_not(x) -> int:
    return x
'''

DUPLICATE = '''
from engine.node import node
from engine.types import INT

@node(name="Const", output_name="value")
def my_const(value: int = 0) -> INT:
    return value
'''

PACKAGE_INIT = '''
from engine.node import node
from engine.types import INT

@node(name="CustomPackaged", output_name="value")
def packaged(x: int) -> INT:
    return x + 1
'''


def test_load_folder_reports_broken_modules_and_loads_the_others(tmp_path):
    (tmp_path / "a_good.py").write_text(GOOD)
    (tmp_path / "b_broken_import.py").write_text(BROKEN_IMPORT)
    (tmp_path / "c_broken_declaration.py").write_text(BROKEN_DECLARATION)
    (tmp_path / "d_duplicate.py").write_text(DUPLICATE)
    (tmp_path / "_private.py").write_text("raise RuntimeError('must not be imported')")
    (tmp_path / "notes.txt").write_text("not python")
    pkg = tmp_path / "e_package"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(PACKAGE_INIT)
    (tmp_path / "f_empty_dir").mkdir()

    reg = Registry([tn.const])
    reg.load_folder(tmp_path)
    assert "CustomDouble" in reg and "CustomPackaged" in reg
    errors = "\n".join(reg.load_errors)
    assert len(reg.load_errors) == 3, errors
    assert "b_broken_import.py" in errors and "ModuleNotFoundError" in errors
    assert "c_broken_declaration.py" in errors and "NodeDeclarationError" in errors
    assert "d_duplicate.py" in errors and "declared twice" in errors
    assert "_private" not in errors
    assert reg.get("Const").func is tn.const  # the built-in was not replaced


def test_load_folder_that_does_not_exist(tmp_path):
    reg = Registry()
    reg.load_folder(tmp_path / "missing")
    assert len(reg.load_errors) == 1 and "missing" in reg.load_errors[0]


def test_default_registry_and_catalog_json():
    reg = Registry.default()
    for name in ("LoadImage", "SaveImage", "PreviewImage", "ImageResize", "ImageCrop", "ImagePad", "ImageComposite",
                 "ImageInvert", "ImageBlur", "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveBoolean",
                 "Seed", "RandomSeed"):
        assert name in reg, name
    cat = reg.catalog_json()
    json.dumps(cat)
    assert set(cat) == {"types", "nodes"}
    assert cat["nodes"]["SaveImage"]["output_node"] is True
    assert cat["nodes"]["RandomSeed"]["deterministic"] is False
    assert [n.name for n in reg.catalog()] == reg.names()


def test_custom_module_can_be_written_with_a_few_lines(tmp_path):
    (tmp_path / "mine.py").write_text(textwrap.dedent(GOOD))
    reg = Registry([tn.const, tn.show])
    reg.load_folder(tmp_path)
    graph, errors = validate(tn.wf({
        "c": {"type": "Const", "inputs": {"value": 4}},
        "d": {"type": "CustomDouble", "inputs": {"x": tn.ln("c", "value")}},
        "s": {"type": "Show", "inputs": {"value": tn.ln("d", "value")}},
    }), reg)
    assert errors == [] and graph.order == ["c", "d", "s"]
