"""engine/node.py: what a declaration turns into, and every wrong declaration failing at decoration time."""

import json
from typing import Annotated, Literal

import pytest
from pydantic import Field

import loomtest_nodes as tn
from engine.node import (
    Choices, NodeContext, NodeDeclarationError, NodeError, NodeSchema, NodeUI, Outputs, Widget, node,
)
from engine.types import FLOAT, IMAGE, INT, LATENT, MASK, STRING


def _spec(fn, name):
    return fn.__loom_node__.inputs[name]


# --- inputs from hints and Field ----------------------------------------------------------------------
def test_inputs_from_hints_and_field():
    def _sizes(settings):
        return ["small", "large"] if settings is None else list(settings)

    @node(category="test/cat", display_name="Everything Node")
    def everything(
        image: IMAGE,
        count: Annotated[int, Field(4, ge=1, le=64, description="how many")],
        strength: Annotated[float, Field(ge=0.0, le=2.0), Widget(step=0.05, slider=True)] = 1.0,
        mode: Literal["fast", "slow"] = "fast",
        size: Annotated[str, Choices(_sizes)] = "small",
        prompt: Annotated[str, Widget(multiline=True), Field(description="the text")] = "",
        mask: MASK | None = None,
        label: str | None = None,
    ) -> IMAGE:
        """First line of the description.

        More text."""
        return image

    d = everything.__loom_node__
    assert d.name == "Everything"
    assert d.category == "test/cat" and d.display_name == "Everything Node"
    assert d.description.startswith("First line of the description.")
    assert list(d.inputs) == ["image", "count", "strength", "mode", "size", "prompt", "mask", "label"]

    image = d.inputs["image"]
    assert image.type is IMAGE and image.required and image.link_only
    count = d.inputs["count"]
    assert count.type is INT and not count.required and count.default == 4 and count.description == "how many"
    strength = d.inputs["strength"]
    assert strength.type is FLOAT and strength.default == 1.0 and strength.widget.step == 0.05
    mode = d.inputs["mode"]
    assert mode.type is STRING and mode.static_choices == ("fast", "slow") and mode.default == "fast"
    assert d.inputs["size"].choices is not None
    assert d.inputs["prompt"].widget.multiline and d.inputs["prompt"].description == "the text"
    mask = d.inputs["mask"]
    assert mask.type is MASK and not mask.required and mask.link_only and mask.default is None
    label = d.inputs["label"]
    assert label.type is STRING and not label.required and label.default is None and not label.link_only
    assert [o.name for o in d.outputs] == ["image"] and d.outputs[0].type is IMAGE

    s = d.schema().model_dump()
    by = {i["name"]: i for i in s["inputs"]}
    assert by["count"]["min"] == 1 and by["count"]["max"] == 64 and by["count"]["default"] == 4
    assert by["strength"]["step"] == 0.05 and by["strength"]["slider"] is True
    assert by["mode"]["choices"] == ["fast", "slow"]
    assert by["size"]["choices"] == ["small", "large"]  # computed at catalog time
    assert d.schema(["a", "b"]).model_dump()["inputs"][4]["choices"] == ["a", "b"]  # from the settings given
    assert by["prompt"]["multiline"] is True and by["prompt"]["description"] == "the text"
    assert by["mask"]["required"] is False and by["mask"]["link_only"] is True
    assert by["image"]["required"] is True


def test_literal_validation_is_strict():
    count = _spec(tn.split, "at")
    assert count.validate_literal(5) is None
    assert count.validate_literal(101)[0] == "out_of_range"
    assert count.validate_literal(-1)[0] == "out_of_range"
    assert count.validate_literal(1.5)[0] == "invalid_literal"
    assert count.validate_literal("3")[0] == "invalid_literal"
    assert count.validate_literal(True)[0] == "invalid_literal"  # a bool is not an int here
    flag = _spec(tn.pick, "flag")
    assert flag.validate_literal(True) is None
    assert flag.validate_literal("false")[0] == "invalid_literal"
    assert flag.validate_literal(0)[0] == "invalid_literal"
    ratio = _spec(tn.pick, "ratio")
    assert ratio.validate_literal(1) is None  # an int is a valid float (widening)
    assert ratio.validate_literal(True)[0] == "invalid_literal"
    assert ratio.validate_literal(1.5)[0] == "out_of_range"
    mode = _spec(tn.pick, "mode")
    assert mode.validate_literal("b") is None
    assert mode.validate_literal("d")[0] == "not_in_choices"
    colour = _spec(tn.colour, "name")
    assert colour.validate_literal("green") is None
    assert colour.validate_literal("purple")[0] == "not_in_choices"
    assert colour.validate_literal(3)[0] == "invalid_literal"


def test_literal_int_choices_do_not_take_bools():
    @node
    def int_choice(n: Literal[1, 2, 4] = 1) -> INT:
        return n

    spec = int_choice.__loom_node__.inputs["n"]
    assert spec.validate_literal(2) is None
    assert spec.validate_literal(3)[0] == "not_in_choices"
    assert spec.validate_literal(True) is not None  # True == 1 in Python, but it is not a choice


def test_computed_choices_that_fail_never_raise_in_validation():
    def broken(settings):
        raise OSError("models folder unreadable")

    @node
    def pick_model(name: Annotated[str, Choices(broken)] = "x") -> STRING:
        return name

    spec = pick_model.__loom_node__.inputs["name"]
    problem = spec.validate_literal("x")
    assert problem is not None and problem[0] == "not_in_choices" and "unreadable" in problem[1]


def test_catalog_of_broken_choices_is_stable():
    def broken(settings):
        raise OSError("gone")

    @node
    def pick_model2(name: Annotated[str, Choices(broken)] = "x") -> STRING:
        return name

    d = pick_model2.__loom_node__
    first = d.schema().inputs[0].description
    second = d.schema().inputs[0].description
    assert "choices unavailable" in first
    assert first == second  # building the catalog twice must not grow the description
    assert d.inputs["name"].description == ""


def test_link_only_and_socket_literals():
    image = _spec(tn.use_sub, "thing")
    problem = image.validate_literal("anything")
    assert problem[0] == "link_required"


def test_multi_outputs_from_outputs_subclass():
    d = tn.split.__loom_node__
    assert [(o.name, o.type) for o in d.outputs] == [("low", INT), ("high", INT)]
    assert d.multi_output
    assert d.normalise_result(tn.SplitOut(low=1, high=2)) == {"low": 1, "high": 2}
    assert d.normalise_result({"low": 1, "high": 2}) == {"low": 1, "high": 2}
    assert d.normalise_result((1, 2)) == {"low": 1, "high": 2}
    with pytest.raises(NodeError, match="no value for outputs"):
        d.normalise_result({"low": 1})
    with pytest.raises(NodeError, match="expected its Outputs"):
        d.normalise_result(3)


def test_output_descriptions_and_primitive_outputs():
    class Described(Outputs):
        latent: Annotated[LATENT, Field(description="the latent")]
        count: int

    @node
    def described(x: int) -> Described:
        return Described(latent=None, count=x)

    outs = described.__loom_node__.outputs
    assert outs[0].description == "the latent"
    assert outs[1].type is INT


def test_context_injection_and_flags():
    seen = {}

    def fp(inputs, settings):
        return "v1"

    @node(output_node=True, deterministic=False, fingerprint=fp, aliases=["OldName"])
    def ctx_node(x: int, context: NodeContext) -> NodeUI:
        seen["ctx"] = context
        return NodeUI(text=[str(x)])

    d = ctx_node.__loom_node__
    assert d.context_param == "context" and "context" not in d.inputs
    assert d.output_node and not d.deterministic and d.fingerprint is fp and d.aliases == ("OldName",)
    assert d.outputs == []
    ctx = NodeContext(node_id="n1", node_type="CtxNode")
    out = d.call({"x": 3}, ctx)
    assert seen["ctx"] is ctx
    assert out["__ui__"].text == ["3"]
    s = d.schema()
    assert s.output_node and not s.deterministic and s.aliases == ["OldName"]


def test_context_progress_and_interrupt():
    import threading

    from engine.node import Interrupted

    got = []
    stop = threading.Event()
    ctx = NodeContext(node_id="n", emit=lambda kind, data: got.append((kind, data["value"], data.get("max"))), interrupt_event=stop)
    ctx.progress(1, 4)
    assert got == [("progress", 1, 4)]
    stop.set()
    with pytest.raises(Interrupted):
        ctx.progress(2, 4)
    with pytest.raises(Interrupted):
        ctx.check_interrupt()


def test_single_output_names():
    assert tn.double.__loom_node__.outputs[0].name == "value"  # output_name=
    assert tn.make_base.__loom_node__.outputs[0].name == "value"

    @node
    def to_image(x: int) -> IMAGE:
        return x

    assert to_image.__loom_node__.outputs[0].name == "image"  # default: the type's name in lower case


def test_default_name_is_camel_case_of_the_function():
    @node
    def vae_decode_tiled(x: int) -> INT:
        return x

    assert vae_decode_tiled.__loom_node__.name == "VaeDecodeTiled"
    assert vae_decode_tiled.__loom_node__.display_name == "Vae Decode Tiled"


def test_schema_is_json_and_validates_as_node_schema():
    for fn in tn.ALL:
        s = fn.__loom_node__.schema()
        text = json.dumps(s.model_dump())
        again = NodeSchema.model_validate(json.loads(text))
        assert again == s
    loop = tn.accumulate.__loom_node__.schema()
    assert [o.name for o in loop.loop.body_inputs] == ["value", "step"]
    assert [i.name for i in loop.loop.body_outputs] == ["value"]
    assert loop.loop.default_body == tn.ACC_BODY


# --- wrong declarations fail at decoration time ---------------------------------------------------------
def _declare(fn, **kw):
    return node(**kw)(fn)


def test_missing_annotation():
    def f(x) -> INT:
        return x

    with pytest.raises(NodeDeclarationError, match="missing type annotation"):
        _declare(f)


def test_unknown_annotation_type():
    def f(x: list) -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match="not a socket type"):
        _declare(f)

    def g(x: int) -> dict:
        return {}

    with pytest.raises(NodeDeclarationError, match="return annotation"):
        _declare(g)


def test_unknown_metadata():
    def f(x: Annotated[int, "what"]) -> INT:
        return x

    with pytest.raises(NodeDeclarationError, match="unknown annotation metadata"):
        _declare(f)


@pytest.mark.parametrize("default", [0, 100, "5", 2.5])
def test_bad_default(default):
    def f(x: Annotated[int, Field(ge=1, le=10)] = default) -> INT:
        return x

    with pytest.raises(NodeDeclarationError, match="default"):
        _declare(f)


def test_bad_default_for_literal_and_socket():
    def f(mode: Literal["a", "b"] = "c") -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match="default"):
        _declare(f)

    def g(image: IMAGE = 3) -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match="can only default to None"):
        _declare(g)


def test_generator_without_loop_and_loop_without_generator():
    def gen(x: int) -> INT:
        yield x

    with pytest.raises(NodeDeclarationError, match="generator"):
        _declare(gen)

    def plain(x: int) -> INT:
        return x

    with pytest.raises(NodeDeclarationError, match="generator"):
        _declare(plain, loop=(tn.AccIn, tn.AccOut, tn.ACC_BODY))


@pytest.mark.parametrize("bad", ["lower", "With Space", "Under_score", "9Starts", "Dash-ed"])
def test_non_camel_case_name(bad):
    def f(x: int) -> INT:
        return x

    with pytest.raises(NodeDeclarationError, match="CamelCase"):
        _declare(f, name=bad)


def test_no_outputs_and_not_output_node():
    def f(x: int) -> None:
        return None

    with pytest.raises(NodeDeclarationError, match="no outputs"):
        _declare(f)
    assert _declare(f, output_node=True).__loom_node__.output_node  # fine as an output node


def test_ranges_on_a_socket_type():
    def f(image: Annotated[IMAGE, Field(ge=0)]) -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match="ranges"):
        _declare(f)


def test_other_wrong_declarations():
    def star(*xs: int) -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match=r"\*args"):
        _declare(star)

    def mixed(x: Literal["a", 1] = "a") -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match="Literal"):
        _declare(mixed)

    def choices_on_int(x: Annotated[int, Choices(lambda s: [])] = 1) -> INT:
        return 1

    with pytest.raises(NodeDeclarationError, match="Choices"):
        _declare(choices_on_int)

    class Empty(Outputs):
        pass

    def empty(x: int) -> Empty:
        return Empty()

    with pytest.raises(NodeDeclarationError, match="declares no outputs"):
        _declare(empty)

    class BadOut(Outputs):
        thing: list

    def bad_out(x: int) -> BadOut:
        return BadOut(thing=[])

    with pytest.raises(NodeDeclarationError, match="no socket type"):
        _declare(bad_out)

    def unresolvable(x: "NoSuchName") -> INT:  # noqa: F821
        return 1

    with pytest.raises(NodeDeclarationError, match="cannot resolve"):
        _declare(unresolvable)
