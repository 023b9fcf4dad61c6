"""How a node is declared: a typed Python function, read once at import into a `NodeDef`.

    @node(category="image")
    def invert_image(image: IMAGE) -> IMAGE:
        '''Turn every pixel into its complement.'''
        return 1.0 - image

Inputs come from the parameters: a socket type (link only), or a primitive (`int`, `float`, `str`,
`bool`, `Literal[...]`) that may be a literal widget value or a link. Ranges, steps, defaults and
descriptions come from pydantic's `Field` inside `Annotated`; widget hints from `Widget`; choices
computed at catalog time (e.g. the files of a model folder) from `Choices`. A parameter annotated with
`NodeContext` receives the run context (progress, interrupt, folders). Several outputs are declared by
returning a subclass of `Outputs`. Every mistake in a declaration raises `NodeDeclarationError` at
import, never at run time.

The catalog entry of every node (`NodeDef.schema()`) is a pydantic model: it is what `loom nodes --json`,
the HTTP API and the editor's palette show, and literal inputs are validated by pydantic adapters built
from the same annotations.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import threading
import types as pytypes
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .types import ANY, PRIMITIVE_TYPES, STRING, OptionalSocket, SocketType


class NodeDeclarationError(TypeError):
    """A node declaration is wrong; raised at import so a bad node never reaches a user's run."""


class Interrupted(Exception):
    """Raised inside a node by `NodeContext.check_interrupt()` when the user asked to stop."""


class NodeError(Exception):
    """An error a node raises on purpose: its message is shown to the user as is (no traceback)."""


# ----------------------------------------------------------------------------------------------------
# Declaration markers
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Widget:
    """Editor hints for a literal input. They never change validation, only how the input is edited."""

    multiline: bool = False
    slider: bool = False
    step: float | None = None
    seed: bool = False  # show fixed / increment / randomize controls
    upload: str | None = None  # "image" | "mask": show an upload button for the input folder
    placeholder: str | None = None
    advanced: bool = False


@dataclass(frozen=True)
class Choices:
    """Choices computed when the catalog is built (e.g. the checkpoints in `models/checkpoints/`).

    `source(settings)` returns the list. Validation accepts a value from the list; `allow_other=True`
    also accepts values outside it (used where the list is only a suggestion).
    """

    source: Callable[[Any], list[str]]
    allow_other: bool = False


class Outputs:
    """Base for multi-output declarations: subclass with annotations, return an instance.

        class CheckpointOutputs(Outputs):
            unet: UNET
            vae: VAE
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


class FileRef(BaseModel):
    """A file a node wrote or showed, as ComfyUI names it: file name, sub-folder, and folder kind."""

    filename: str
    subfolder: str = ""
    type: Literal["output", "temp", "input"] = "output"


class NodeUI(BaseModel):
    """What an output node shows: images it saved or previews, and text. Cached with its outputs."""

    images: list[FileRef] = []
    text: list[str] = []


@dataclass
class Folders:
    """Where nodes read and write: the run's settings, not globals."""

    models: Path = Path("models")
    input: Path = Path("input")
    output: Path = Path("output")
    temp: Path = Path("output/temp")
    user: Path = Path("user")

    def folder_of(self, kind: str) -> Path:
        return {"output": self.output, "temp": self.temp, "input": self.input}[kind]


@dataclass
class NodeContext:
    """The one object a node gets from the engine: progress, interrupt, warnings, folders, run facts."""

    node_id: str = ""
    node_type: str = ""
    run_id: str = ""
    folders: Folders = field(default_factory=Folders)
    settings: Any = None  # engine.settings.Settings; Any keeps the node API free of engine internals
    workflow: dict | None = None  # the workflow being run (SaveImage embeds it in PNGs)
    prompt: dict | None = None  # the ComfyUI API form when the run came from there
    interrupt_event: threading.Event | None = None
    emit: Callable[[str, dict], None] | None = None

    def check_interrupt(self) -> None:
        if self.interrupt_event is not None and self.interrupt_event.is_set():
            raise Interrupted(f"interrupted in node {self.node_id}")

    def progress(self, value: float, max: float | None = None, preview: Any = None, text: str | None = None) -> None:
        """Report progress (and an optional preview image or status line), and stop here if the user interrupted."""
        self._last_progress = (value, max)
        if self.emit is not None:
            self.emit("progress", {"value": value, "max": max, "preview": preview, "text": text})
        self.check_interrupt()

    def status(self, text: str) -> None:
        """Say what the node is doing during a long stretch without progress (e.g. "compiling UNet ..."): a
        progress event at the last value, with this status line."""
        value, max = getattr(self, "_last_progress", (0.0, None))
        self.progress(value, max, text=text)

    def warn(self, message: str) -> None:
        if self.emit is not None:
            self.emit("warning", {"message": message})


# ----------------------------------------------------------------------------------------------------
# Catalog schema (pydantic: the single source for `loom nodes --json`, the API and the palette)
# ----------------------------------------------------------------------------------------------------


class InputSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    type: str
    required: bool
    link_only: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: list[Any] | None = None
    description: str = ""
    display_name: str = ""
    multiline: bool = False
    slider: bool = False
    seed: bool = False
    upload: str | None = None
    advanced: bool = False


class OutputSchema(BaseModel):
    name: str
    type: str
    description: str = ""


class LoopSchema(BaseModel):
    body_inputs: list[OutputSchema]
    body_outputs: list[InputSchema]
    default_body: dict


class NodeSchema(BaseModel):
    name: str
    display_name: str
    category: str
    description: str
    inputs: list[InputSchema]
    outputs: list[OutputSchema]
    output_node: bool
    deterministic: bool
    aliases: list[str] = []
    loop: LoopSchema | None = None


# ----------------------------------------------------------------------------------------------------
# Parsed declarations
# ----------------------------------------------------------------------------------------------------

_STRICT = ConfigDict(strict=True)


@dataclass
class InputSpec:
    name: str
    type: SocketType
    required: bool
    default: Any = None
    link_only: bool = False  # a non-primitive socket: only a link may feed it
    field_info: FieldInfo | None = None
    widget: Widget = field(default_factory=Widget)
    static_choices: tuple | None = None
    choices: Choices | None = None
    adapter: TypeAdapter | None = None
    description: str = ""

    def validate_literal(self, value: Any, settings: Any = None) -> tuple[str, str] | None:
        """Check a literal value; returns (code, message) or None. Never coerces ("false" is not False)."""
        if self.link_only:
            return ("link_required", f"input {self.name!r} of type {self.type.name} needs a link, not a literal value")
        if self.adapter is not None:
            try:
                self.adapter.validate_python(value)
            except PydanticValidationError as exc:
                err = exc.errors()[0]
                kind = err.get("type", "")
                if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
                    return ("out_of_range", f"input {self.name!r}: {value!r} is out of range ({err['msg']})")
                if kind == "literal_error":
                    return ("not_in_choices", f"input {self.name!r}: {value!r} is not one of {list(self.static_choices or ())}")
                return ("invalid_literal", f"input {self.name!r} expects {self.type.name}: {err['msg']} (got {value!r})")
        if self.static_choices is not None and isinstance(value, bool) and self.type.name != "BOOLEAN":
            # pydantic's Literal check uses ==, and True == 1: no silent coercion of a bool into a number
            return ("invalid_literal", f"input {self.name!r} expects {self.type.name}, got the boolean {value!r}")
        if self.choices is not None and not self.choices.allow_other:
            try:
                options = list(self.choices.source(settings))
            except Exception as exc:  # a broken folder is a validation error, never an exception
                return ("not_in_choices", f"input {self.name!r}: the choices could not be listed ({type(exc).__name__}: {exc})")
            if value not in options:
                shown = options[:20]
                return ("not_in_choices", f"input {self.name!r}: {value!r} is not one of {shown}" + (" ..." if len(options) > 20 else ""))
        return None

    def schema(self, settings: Any = None) -> InputSchema:
        f = self.field_info
        lo = hi = None
        if f is not None:
            for m in f.metadata:
                lo = getattr(m, "ge", lo) if getattr(m, "ge", None) is not None else lo
                lo = getattr(m, "gt", lo) if getattr(m, "gt", None) is not None else lo
                hi = getattr(m, "le", hi) if getattr(m, "le", None) is not None else hi
                hi = getattr(m, "lt", hi) if getattr(m, "lt", None) is not None else hi
        choices: list | None = list(self.static_choices) if self.static_choices else None
        description = self.description
        if self.choices is not None:
            try:
                choices = list(self.choices.source(settings))
            except Exception as exc:  # a broken folder must not break the whole catalog
                choices = []
                description = f"{description} (choices unavailable: {exc})".strip()
        return InputSchema(
            name=self.name,
            type=self.type.name,
            required=self.required,
            link_only=self.link_only,
            default=self.default,
            min=lo,
            max=hi,
            step=self.widget.step,
            choices=choices,
            description=description,
            display_name=(f.title if f is not None and f.title else self.name.replace("_", " ")),
            multiline=self.widget.multiline,
            slider=self.widget.slider,
            seed=self.widget.seed,
            upload=self.widget.upload,
            advanced=self.widget.advanced,
        )


@dataclass
class OutputSpec:
    name: str
    type: SocketType
    description: str = ""


@dataclass
class LoopSpec:
    """A loop node runs its `body` graph once per iteration.

    The node function is a generator: each `yield` hands one `body_inputs` instance to the body's
    `LoopInput` node, and receives a dict of what the body's `LoopOutput` node got. The loop logic stays
    plain Python; the body stays an editable graph in the workflow file.
    """

    body_inputs: type[Outputs]
    body_outputs: type[Outputs]
    default_body: dict
    inputs: list[OutputSpec] = field(default_factory=list)  # exposed by LoopInput
    outputs: list[InputSpec] = field(default_factory=list)  # required by LoopOutput


@dataclass
class NodeDef:
    """Everything the engine knows about a node type."""

    name: str
    func: Callable[..., Any]
    category: str
    display_name: str
    description: str
    inputs: dict[str, InputSpec]
    outputs: list[OutputSpec]
    output_node: bool = False
    deterministic: bool = True
    fingerprint: Callable[..., str] | None = None
    aliases: tuple[str, ...] = ()
    context_param: str | None = None
    loop: LoopSpec | None = None
    multi_output: bool = False
    module: str = ""

    def schema(self, settings: Any = None) -> NodeSchema:
        loop = None
        if self.loop is not None:
            loop = LoopSchema(
                body_inputs=[OutputSchema(name=o.name, type=o.type.name, description=o.description) for o in self.loop.inputs],
                body_outputs=[i.schema(settings) for i in self.loop.outputs],
                default_body=self.loop.default_body,
            )
        return NodeSchema(
            name=self.name,
            display_name=self.display_name,
            category=self.category,
            description=self.description,
            inputs=[i.schema(settings) for i in self.inputs.values()],
            outputs=[OutputSchema(name=o.name, type=o.type.name, description=o.description) for o in self.outputs],
            output_node=self.output_node,
            deterministic=self.deterministic,
            aliases=list(self.aliases),
            loop=loop,
        )

    def call(self, kwargs: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
        """Run the function and normalise its result to {output name: value} (plus "__ui__")."""
        if self.context_param is not None:
            kwargs[self.context_param] = ctx
        result = self.func(**kwargs)
        return self.normalise_result(result)

    def normalise_result(self, result: Any) -> dict[str, Any]:
        """{output name: value}, plus "__ui__" when the node also shows something: a node may return its
        value(s), a NodeUI alone (output nodes without outputs), or `(value(s), NodeUI)`."""
        if isinstance(result, NodeUI):
            return {"__ui__": result}
        ui = None
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], NodeUI):
            result, ui = result
        out = self._values(result)
        if ui is not None:
            out["__ui__"] = ui
        return out

    def _values(self, result: Any) -> dict[str, Any]:
        if self.multi_output:
            if isinstance(result, Outputs):
                return result.as_dict()
            if isinstance(result, dict):
                missing = [o.name for o in self.outputs if o.name not in result]
                if missing:
                    raise NodeError(f"node {self.name} returned no value for outputs {missing}")
                return dict(result)
            if isinstance(result, tuple) and len(result) == len(self.outputs):
                return {o.name: v for o, v in zip(self.outputs, result)}
            raise NodeError(f"node {self.name} returned {type(result).__name__}, expected its Outputs")
        if not self.outputs:
            return {}
        return {self.outputs[0].name: result}


# ----------------------------------------------------------------------------------------------------
# Parsing annotations
# ----------------------------------------------------------------------------------------------------


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _title(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)


def _split_annotated(annotation: Any) -> tuple[Any, list[Any]]:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        inner, more = _split_annotated(base)
        return inner, more + list(meta)
    return annotation, []


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    if isinstance(annotation, OptionalSocket):
        return annotation.inner, True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, pytypes.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _parse_input(func_name: str, pname: str, annotation: Any, default: Any) -> InputSpec:
    where = f"node {func_name!r}, input {pname!r}"
    annotation, optional_outer = _strip_optional(annotation)
    base, meta = _split_annotated(annotation)
    base, optional_inner = _strip_optional(base)
    optional = optional_outer or optional_inner
    field_info = next((m for m in meta if isinstance(m, FieldInfo)), None)
    widget = next((m for m in meta if isinstance(m, Widget)), Widget())
    choices = next((m for m in meta if isinstance(m, Choices)), None)
    for m in meta:
        if not isinstance(m, (FieldInfo, Widget, Choices)):
            raise NodeDeclarationError(f"{where}: unknown annotation metadata {m!r}")

    if default is inspect.Parameter.empty and field_info is not None and field_info.default is not PydanticUndefined:
        default = field_info.default
    has_default = default is not inspect.Parameter.empty
    description = (field_info.description if field_info is not None else None) or ""

    static_choices = None
    if isinstance(base, SocketType):
        if field_info is not None and field_info.metadata:
            raise NodeDeclarationError(f"{where}: ranges make no sense on socket type {base.name}")
        if has_default and default is not None:
            raise NodeDeclarationError(f"{where}: a {base.name} input can only default to None (optional)")
        link_only = base.name not in {t.name for t in PRIMITIVE_TYPES.values()} and base is not ANY
        return InputSpec(
            name=pname, type=base, required=not (optional or has_default), default=None,
            link_only=link_only, field_info=field_info, widget=widget, description=description,
            adapter=None if link_only or base is ANY else TypeAdapter(_py_of(base), config=_STRICT),
        )
    if typing.get_origin(base) is Literal:
        static_choices = typing.get_args(base)
        kinds = {type(c) for c in static_choices}
        if len(kinds) != 1 or next(iter(kinds)) not in PRIMITIVE_TYPES:
            raise NodeDeclarationError(f"{where}: Literal choices must all be of one primitive type, got {static_choices!r}")
        sock = PRIMITIVE_TYPES[next(iter(kinds))]
    elif base in PRIMITIVE_TYPES:
        sock = PRIMITIVE_TYPES[base]
    else:
        raise NodeDeclarationError(
            f"{where}: annotation {base!r} is not a socket type, int, float, str, bool or Literal[...]"
        )
    if choices is not None and sock is not STRING:
        raise NodeDeclarationError(f"{where}: computed Choices need a str input")
    target = typing.Annotated[base, field_info] if field_info is not None else base
    adapter = TypeAdapter(target, config=_STRICT)
    if has_default and default is not None:
        try:
            adapter.validate_python(default)
        except PydanticValidationError as exc:
            raise NodeDeclarationError(f"{where}: default {default!r} is invalid: {exc.errors()[0]['msg']}") from None
    if optional and not has_default:
        default, has_default = None, True
    return InputSpec(
        name=pname, type=sock, required=not has_default, default=None if not has_default else default,
        field_info=field_info, widget=widget, static_choices=static_choices, choices=choices,
        adapter=adapter, description=description,
    )


def _py_of(sock: SocketType) -> type:
    for py, s in PRIMITIVE_TYPES.items():
        if s is sock:
            return py
    return object


def _parse_outputs(func_name: str, annotation: Any, output_name: str | None,
                   localns: dict | None = None) -> tuple[list[OutputSpec], bool]:
    if annotation is inspect.Signature.empty or annotation is None or annotation is type(None):
        return [], False
    if annotation is NodeUI:
        return [], False
    if isinstance(annotation, type) and issubclass(annotation, Outputs):
        specs = []
        for fname, fann in typing.get_type_hints(annotation, localns=localns, include_extras=True).items():
            base, meta = _split_annotated(fann)
            desc = next((m.description for m in meta if isinstance(m, FieldInfo) and m.description), "")
            if base in PRIMITIVE_TYPES:
                base = PRIMITIVE_TYPES[base]
            if not isinstance(base, SocketType):
                raise NodeDeclarationError(f"node {func_name!r}: output {fname!r} has no socket type ({base!r})")
            specs.append(OutputSpec(fname, base, desc))
        if not specs:
            raise NodeDeclarationError(f"node {func_name!r}: {annotation.__name__} declares no outputs")
        return specs, True
    base, _ = _split_annotated(annotation)
    if base in PRIMITIVE_TYPES:
        base = PRIMITIVE_TYPES[base]
    if not isinstance(base, SocketType):
        raise NodeDeclarationError(
            f"node {func_name!r}: return annotation {annotation!r} is not a socket type, a primitive or an Outputs subclass"
        )
    name = output_name or ("value" if base is ANY else base.name.lower())
    return [OutputSpec(name, base)], False


def node(
    func: Callable | None = None,
    *,
    name: str | None = None,
    category: str = "misc",
    display_name: str | None = None,
    output_node: bool = False,
    deterministic: bool = True,
    fingerprint: Callable[..., str] | None = None,
    aliases: Iterable[str] = (),
    output_name: str | None = None,
    loop: tuple[type[Outputs], type[Outputs], dict] | None = None,
) -> Any:
    """Declare a node. Use bare (`@node`) or with options (`@node(category="image")`).

    - `name`: the stable CamelCase type name (default: the function name in CamelCase).
    - `output_node`: the node produces a result for the user (files, previews); runs are planned from these.
    - `deterministic=False`: never cached (e.g. a "random seed" node).
    - `fingerprint(literal_inputs: dict, settings) -> str`: outside state the node reads (a file's
      size+mtime), so that the cache notices when it changes.
    - `loop=(BodyInputs, BodyOutputs, default_body)`: the node is a loop; see `LoopSpec`.
    """

    # nodes declared inside a function (tests, benchmarks) name types that only its locals know
    localns = dict(sys._getframe(1).f_locals)

    def wrap(fn: Callable) -> Callable:
        fn.__loom_node__ = build_node_def(  # type: ignore[attr-defined]
            fn, name=name, category=category, display_name=display_name, output_node=output_node,
            deterministic=deterministic, fingerprint=fingerprint, aliases=tuple(aliases),
            output_name=output_name, loop=loop, localns=localns,
        )
        return fn

    return wrap(func) if func is not None else wrap


def build_node_def(
    fn: Callable, *, name: str | None = None, category: str = "misc", display_name: str | None = None,
    output_node: bool = False, deterministic: bool = True, fingerprint: Callable[..., str] | None = None,
    aliases: tuple[str, ...] = (), output_name: str | None = None,
    loop: tuple[type[Outputs], type[Outputs], dict] | None = None, localns: dict | None = None,
) -> NodeDef:
    type_name = name or _camel(fn.__name__)
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", type_name):
        raise NodeDeclarationError(f"node type name {type_name!r} must be CamelCase letters and digits")
    try:
        hints = typing.get_type_hints(fn, localns=localns, include_extras=True)
    except Exception as exc:
        raise NodeDeclarationError(f"node {type_name!r}: cannot resolve annotations: {exc}") from None
    sig = inspect.signature(fn)
    inputs: dict[str, InputSpec] = {}
    context_param = None
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise NodeDeclarationError(f"node {type_name!r}: *args/**kwargs are not allowed ({pname})")
        ann = hints.get(pname, inspect.Parameter.empty)
        if ann is inspect.Parameter.empty:
            raise NodeDeclarationError(f"node {type_name!r}, input {pname!r}: missing type annotation")
        if ann is NodeContext:
            context_param = pname
            continue
        inputs[pname] = _parse_input(type_name, pname, ann, param.default)
    outputs, multi = _parse_outputs(type_name, hints.get("return", inspect.Signature.empty), output_name, localns)
    if not outputs and not output_node:
        raise NodeDeclarationError(f"node {type_name!r}: declares no outputs and is not an output node")
    loop_spec = None
    if loop is not None:
        if not inspect.isgeneratorfunction(fn):
            raise NodeDeclarationError(f"node {type_name!r}: a loop node must be a generator function")
        body_in, body_out, default_body = loop
        out_hints = typing.get_type_hints(body_out, localns=localns, include_extras=True)
        loop_spec = LoopSpec(
            body_inputs=body_in, body_outputs=body_out, default_body=default_body,
            inputs=_parse_outputs(type_name, body_in, None, localns)[0],
            outputs=[_parse_input(type_name, k, v, inspect.Parameter.empty) for k, v in out_hints.items()],
        )
    elif inspect.isgeneratorfunction(fn):
        raise NodeDeclarationError(f"node {type_name!r}: generator functions are only allowed for loop nodes")
    doc = inspect.getdoc(fn) or ""
    return NodeDef(
        name=type_name, func=fn, category=category, display_name=display_name or _title(type_name),
        description=doc, inputs=inputs, outputs=outputs, output_node=output_node,
        deterministic=deterministic, fingerprint=fingerprint, aliases=tuple(aliases),
        context_param=context_param, loop=loop_spec, multi_output=multi, module=fn.__module__,
    )
