"""Small declared nodes for the engine tests: they count their calls, so tests prove work was skipped.

Nothing here registers globally: tests build `Registry(ALL)` (or a subset). Socket types declared here
use a `T_` prefix so they never collide with the real ones.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from engine.node import Choices, NodeContext, NodeError, NodeUI, FileRef, Outputs, Widget, node
from engine.registry import Registry
from engine.types import ANY, socket_type

CALLS: collections.Counter = collections.Counter()
SEEN: dict[str, Any] = {}  # per-node scratch (e.g. values a body node saw)

T_BASE = socket_type("T_BASE", "#123456", "test base type")
T_SUB = socket_type("T_SUB", "#123457", "test sub type", supertypes=("T_BASE",))
T_SUBSUB = socket_type("T_SUBSUB", "#123458", "test sub-sub type", supertypes=("T_SUB",))
T_OTHER = socket_type("T_OTHER", "#123459", "unrelated test type")


def reset() -> None:
    CALLS.clear()
    SEEN.clear()


def wf(nodes: dict, **extra: Any) -> dict:
    return {"format": "latentloom.workflow", "version": 1, "nodes": nodes, **extra}


def ln(node_id: str, output: str) -> dict:
    return {"node": node_id, "output": output}


# --- plain value nodes ------------------------------------------------------------------------------
@node(name="Const", output_name="value")
def const(value: int = 0) -> int:
    CALLS["Const"] += 1
    return value


@node(name="Add", output_name="value")
def add(a: int, b: int = 0) -> int:
    """Add two integers."""
    CALLS["Add"] += 1
    return a + b


@node(name="Double", output_name="value")
def double(x: int) -> int:
    CALLS["Double"] += 1
    return 2 * x


@node(name="Half", output_name="value")
def half(x: float) -> float:
    CALLS["Half"] += 1
    return x / 2


@node(name="Text", output_name="value")
def text(text: Annotated[str, Widget(multiline=True)] = "") -> str:
    CALLS["Text"] += 1
    return text


class SplitOut(Outputs):
    low: int
    high: int


@node(name="Split")
def split(x: int, at: Annotated[int, Field(ge=0, le=100)] = 10) -> SplitOut:
    CALLS["Split"] += 1
    return SplitOut(low=min(x, at), high=max(x, at))


@node(name="Pick", output_name="value")
def pick(mode: Literal["a", "b", "c"] = "a", flag: bool = False, ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5) -> str:
    CALLS["Pick"] += 1
    return f"{mode}:{flag}:{ratio}"


def _colours(settings: Any) -> list[str]:
    return ["red", "green", "blue"]


@node(name="Colour", output_name="value")
def colour(name: Annotated[str, Choices(_colours)] = "red") -> str:
    CALLS["Colour"] += 1
    return name


@node(name="MakeBase", output_name="value")
def make_base(value: int = 0) -> T_BASE:
    CALLS["MakeBase"] += 1
    return ("base", value)


@node(name="MakeSubSub", output_name="value")
def make_subsub(value: int = 0) -> T_SUBSUB:
    CALLS["MakeSubSub"] += 1
    return ("subsub", value)


@node(name="UseSub", output_name="value")
def use_sub(thing: T_SUB, extra: T_OTHER | None = None) -> T_SUB:
    CALLS["UseSub"] += 1
    return thing


@node(name="Passthrough", output_name="value")
def passthrough(x: ANY) -> ANY:
    CALLS["Passthrough"] += 1
    return x


@node(name="Fail", output_name="value")
def fail(x: int = 0, message: str = "boom", kind: Literal["node", "value"] = "node") -> int:
    CALLS["Fail"] += 1
    if kind == "node":
        raise NodeError(message)
    raise ValueError(message)


@node(name="RandomInt", output_name="value", deterministic=False)
def random_int() -> int:
    CALLS["RandomInt"] += 1
    return CALLS["RandomInt"]


@node(name="Slow", output_name="value")
def slow(x: int, ctx: NodeContext, steps: int = 5, stop_at: int = -1) -> int:
    """Reports progress each step; sets the run's interrupt at step `stop_at` (as a UI would)."""
    CALLS["Slow"] += 1
    for i in range(steps):
        if i == stop_at and ctx.interrupt_event is not None:
            ctx.interrupt_event.set()
        SEEN.setdefault("slow_steps", []).append(i)
        ctx.progress(i + 1, steps)
    return x + steps


@node(name="Wait", output_name="value")
def wait(x: int, ctx: NodeContext, release: str = "") -> int:
    """Blocks until the test releases it (a threading.Event stored in SEEN), then reports progress."""
    CALLS["Wait"] += 1
    SEEN["wait_started"].set()
    SEEN[release or "wait_release"].wait(10)
    ctx.progress(1, 2)
    return x


def _file_fingerprint(inputs: dict, settings: Any) -> str:
    st = Path(inputs["path"]).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


@node(name="ReadFile", output_name="value", fingerprint=_file_fingerprint)
def read_file(path: str) -> str:
    CALLS["ReadFile"] += 1
    return Path(path).read_text()


@node(name="Show", output_node=True, output_name="value")
def show(value: ANY) -> ANY:
    """An output node that passes its value on (tests read it from the cache)."""
    CALLS["Show"] += 1
    return value


@node(name="WriteText", output_node=True)
def write_text(value: ANY, ctx: NodeContext, name: str = "out.txt") -> NodeUI:
    """Writes its value to the output folder (a saved result that must survive a later failure)."""
    CALLS["WriteText"] += 1
    ctx.folders.output.mkdir(parents=True, exist_ok=True)
    (ctx.folders.output / name).write_text(repr(value))
    return NodeUI(images=[FileRef(filename=name)], text=[repr(value)])


# --- a loop node: an accumulator whose body is a graph ------------------------------------------------
class AccIn(Outputs):
    value: int
    step: int


class AccOut(Outputs):
    value: int


ACC_BODY = {
    "nodes": {
        "in": {"type": "LoopInput"},
        "add": {"type": "Add", "inputs": {"a": ln("in", "value"), "b": ln("in", "step")}},
        "out": {"type": "LoopOutput", "inputs": {"value": ln("add", "value")}},
    }
}


@node(name="Accumulate", output_name="value", loop=(AccIn, AccOut, ACC_BODY))
def accumulate(start: int = 0, steps: Annotated[int, Field(ge=0, le=10_000)] = 3) -> int:
    """value = start; for step in range(steps): value = body(value, step)."""
    CALLS["Accumulate"] += 1
    value = start
    for step in range(steps):
        out = yield AccIn(value=value, step=step)
        value = out["value"]
    return value


ALL = [const, add, double, half, text, split, pick, colour, make_base, make_subsub, use_sub, passthrough, fail,
       random_int, slow, wait, read_file, show, write_text, accumulate]


def registry() -> Registry:
    return Registry(ALL)

