"""GPU fast mode (`loom run --fast`, `settings: {"fast": true}`): compiled, CUDA-graph sampling, same pictures.

Why it exists: with CUDA graphs a 512x512 SD1.5 CFG step takes ~7 ms on an H100, so the default mode's
per-step work (an engine loop, eager scheduler maths, a sync for every preview) is a large part of the time.
Fast mode removes it in three layers, each falling back to the next:

1. **Fused step** (Euler, Euler a, DDIM, DPM++ 2M; no noise mask): scale the input, run the ControlNets and the
   UNet on the [uncond, cond] batch, apply CFG (and guidance rescale) and the scheduler update, all inside one
   compiled function (`mode="reduce-overhead"`: one CUDA graph replay per step on CUDA, plain `torch.compile`
   on the CPU). The scheduler update is our own tensor maths (`fused_step.py`), written to mirror diffusers'
   `step()` operation for operation (checked against it in the tests); the per-step constants come from
   diffusers' own schedule.
2. **Stage-wise**: any other sampler, a guess-mode ControlNet, a noise mask or an edited loop body runs the
   default stage functions, with the UNet (and ControlNet) call replaced by a compiled one.
3. **Eager**: a model or shape that fails to compile, or runs out of GPU memory while its CUDA graph is
   captured, runs the default code for that shape: the right picture, at the default speed, with a warning.

Compiled callables live for the process in one cache keyed by (model identity, kind, input shapes, dtype,
device, weight layout), so every workflow that matches reuses them; PyTorch's on-disk caches live in the user
folder (`<user_dir>/compile-cache`) so that a restart pays much less. A new shape announces its compile in the
node's progress status before the stall. Progress is reported every step and latent previews are copied to the host
asynchronously, so no step waits for the GPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import types
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace as dc_replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from engine.devices import first_parameter

from .fused_step import (  # the fused step's maths (re-exported: tests and the benchmark read them here)
    FUSED_KINDS, FusedControls, Recipe, fused_controls, fused_recipe, make_step, scheduler_update, step_constants,
    update_ddim, update_dpmpp_2m, update_euler, update_euler_a,
)
from .ip_adapter import active_key as ip_active_key
from .unet_hooks import active_hooks

log = logging.getLogger("latentloom.fast")

MAX_ENTRIES = 24  # compiled callables kept per process (each holds a CUDA graph and its memory pool)

# Facts for tests and the benchmark: compile attempts, cache hits, the last sampling run.
STATS: dict[str, int] = {"compiles": 0, "hits": 0, "failures": 0}
LAST_RUN: dict[str, Any] = {}


# ----------------------------------------------------------------------------------------------------------
# Options and process set-up
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileOptions:
    """How `torch.compile` is called: CUDA graphs on CUDA with inductor; `LOOM_FAST_BACKEND` overrides the
    backend (the CPU tests use `aot_eager`, since inductor's C++ compile takes minutes on a small CPU)."""

    backend: str
    mode: str | None
    cudagraphs: bool
    fullgraph: bool = True


def compile_options(device: torch.device) -> CompileOptions:
    backend = os.environ.get("LOOM_FAST_BACKEND", "inductor")
    cudagraphs = (device.type == "cuda" and backend == "inductor"
                  and os.environ.get("LOOM_FAST_CUDAGRAPHS", "1") != "0")
    return CompileOptions(backend=backend, mode="reduce-overhead" if cudagraphs else None, cudagraphs=cudagraphs)


def _flag(name: str, default: bool = True) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() not in ("0", "false", "no", "off", "")


_setup_lock = threading.Lock()
_cache_root: Path | None = None


def prepare_process(settings: Any) -> Path | None:
    """Point PyTorch's on-disk compile caches at `<user_dir>/compile-cache`, once, before the first compile.

    Inductor reads `TORCHINDUCTOR_CACHE_DIR` whenever it needs its cache, but importing it (diffusers does)
    already fills the variable with its /tmp default; so a default value is replaced, a value the user chose
    is kept. Triton's folder follows (inductor derives it from its own). Returns the folder in use (None when
    the user folder cannot be written: compiling still works, from scratch).
    """
    global _cache_root
    with _setup_lock:
        if _cache_root is not None:
            return _cache_root
        user_dir = getattr(settings, "user_dir", None)
        if user_dir is None:
            return None
        root = Path(user_dir) / "compile-cache"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("fast mode: cannot create %s (%s); compiled graphs are not kept on disk", root, exc)
            return None
        default = _inductor_default_dir()
        current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        if current is None or os.path.abspath(current) == default:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(root / "inductor")
            triton = os.environ.get("TRITON_CACHE_DIR")
            if triton is not None and os.path.abspath(triton).startswith(default):
                del os.environ["TRITON_CACHE_DIR"]  # set by an earlier compile under the default folder
        os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
        os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
        try:
            import torch._inductor.config as inductor_config

            inductor_config.fx_graph_cache = True  # read from the environment at import time: set it too
        except Exception:  # pragma: no cover - a torch without inductor
            pass
        _cache_root = root
        log.info("fast mode: compile caches in %s", os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
        return root


def _inductor_default_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        return os.path.abspath(default_cache_dir())
    except Exception:  # pragma: no cover - an older layout of torch
        import getpass
        import tempfile

        return os.path.abspath(os.path.join(tempfile.gettempdir(), "torchinductor_" + getpass.getuser()))


@contextlib.contextmanager
def _backend_flags(device: torch.device) -> Iterator[None]:
    """Backend settings for fast-mode calls only, restored afterwards so the default mode is untouched.

    cuDNN picks convolution algorithms by timing them (kept inside the captured graph); SDPA prefers the flash
    kernel; inductor lowers 1x1 convolutions to matrix products. CPU runs get none of this.
    """
    if device.type != "cuda":
        yield
        return
    stack = contextlib.ExitStack()
    with stack:
        old_bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        stack.callback(setattr, torch.backends.cudnn, "benchmark", old_bench)
        stack.enter_context(_sdpa_preference())
        try:
            import torch._inductor.config as inductor_config

            patch = {"conv_1x1_as_mm": True}
            if _flag("LOOM_FAST_TUNE", default=False):  # better kernels, longer compiles
                patch.update(coordinate_descent_tuning=True)
            stack.enter_context(inductor_config.patch(patch))
        except Exception as exc:  # pragma: no cover - a torch without these options
            log.debug("fast mode: inductor options not set: %s", exc)
        yield


def _sdpa_preference() -> contextlib.AbstractContextManager:
    choice = os.environ.get("LOOM_FAST_SDPA", "flash")
    if choice == "default":
        return contextlib.nullcontext()
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        return contextlib.nullcontext()
    order = {"flash": ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"],
             "cudnn": ["CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]}.get(choice)
    if order is None:
        return contextlib.nullcontext()
    backends = [getattr(SDPBackend, name) for name in order if hasattr(SDPBackend, name)]
    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # a torch without priorities: allow the list, in PyTorch's own order
        return sdpa_kernel(backends)


# ----------------------------------------------------------------------------------------------------------
# Notices: a compile is announced in the node's events, never a silent stall
# ----------------------------------------------------------------------------------------------------------

_routes: OrderedDict[str, Any] = OrderedDict()  # run_id -> the loop node's context (body nodes have no emitter)


def route_notices(ctx: Any) -> None:
    """Nodes inside a loop body have no event emitter: their compile notices go to this (loop) node's."""
    run_id = getattr(ctx, "run_id", "")
    if run_id and getattr(ctx, "emit", None) is not None:
        _routes[run_id] = ctx
        while len(_routes) > 8:
            _routes.popitem(last=False)


class Notifier:
    """Say something to the user through the node's events and the log: news (a compile starting) as the node's
    progress status line, trouble (a fallback to eager) as a warning."""

    def __init__(self, ctx: Any = None) -> None:
        self.ctx = ctx

    def __call__(self, message: str, level: int = logging.INFO) -> None:
        log.log(level, "fast mode: %s", message)
        ctx = self.ctx
        if ctx is not None and getattr(ctx, "emit", None) is None:
            ctx = _routes.get(getattr(ctx, "run_id", ""), None)
        if ctx is None or getattr(ctx, "emit", None) is None:
            return
        if level >= logging.WARNING or not hasattr(ctx, "status"):
            ctx.warn(message)
        else:
            ctx.status(message)


# ----------------------------------------------------------------------------------------------------------
# The compiled-callable cache
# ----------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Entry:
    """One compiled callable for one (model, kind, shapes, ...) key; `fn is None` means: run it eagerly."""

    label: str
    fn: Callable | None
    model: weakref.ref
    cudagraphs: bool
    error: str | None = None
    seconds: float = 0.0


_cache: OrderedDict[tuple, Entry] = OrderedDict()
_cache_lock = threading.RLock()


def clear_cache() -> None:
    """Forget every compiled callable (tests; a server freeing memory). PyTorch's own state is reset too."""
    with _cache_lock:
        _cache.clear()
    try:
        torch._dynamo.reset()
    except Exception:  # pragma: no cover
        pass


def cache_size() -> int:
    return len(_cache)


def _fresh(fn: Callable) -> Callable:
    """A copy of `fn` with its own code object.

    Dynamo keeps compiled code and guards per code object; with one copy per cache entry each shape has its
    own guards and never counts against another's recompile limit.
    """
    new = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


def _torch_compile(fn: Callable, opts: CompileOptions) -> Callable:
    """`torch.compile` with our options; a separate function so tests can make it fail."""
    kwargs: dict[str, Any] = {"backend": opts.backend, "fullgraph": opts.fullgraph, "dynamic": False}
    if opts.mode:
        kwargs["mode"] = opts.mode
    return torch.compile(fn, **kwargs)


def _mark_step(opts: CompileOptions) -> None:
    """Tell CUDA-graph trees that the previous replay's outputs are no longer needed (we copy what we keep)."""
    if opts.cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()


def _is_oom(exc: BaseException) -> bool:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, getattr(torch, "OutOfMemoryError", ())) or "out of memory" in str(e).lower():
            return True
        e = e.__cause__ or e.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _estimate(model: torch.nn.Module, device: torch.device, what: str) -> str:
    """A rough first-compile time for the announcement (H100 measurements: SD1.5 UNet ~70 s)."""
    params = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        base = 70.0 if what == "UNet" else 30.0
        ref = 860e6 if what == "UNet" else 84e6
        seconds = base * max(0.2, params / ref) ** 0.6
        return f"~{seconds:.0f} s"
    return "a minute or more on the CPU"


def obtain(key: tuple, model: torch.nn.Module, label: str, make: Callable[[], Callable],
           warmup: Callable[[Callable], Any], device: torch.device, notify: Notifier, what: str = "UNet") -> Entry:
    """The cache entry for `key`, compiling (and capturing, on CUDA) on first use.

    `warmup(fn)` runs the compiled function on inputs of the real shapes; with CUDA graphs it runs it three
    times (warm-up, capture, replay), so compile and capture failures surface here, before any sampling
    state changes, and the caller can fall back to eager for this shape.
    """
    with _cache_lock:
        entry = _cache.get(key)
        if entry is not None and entry.model() is model:
            _cache.move_to_end(key)
            STATS["hits"] += 1
            return entry
        opts = compile_options(device)
        STATS["compiles"] += 1
        notify(f"compiling {label} (first time, {_estimate(model, device, what)})")
        t0 = time.perf_counter()
        try:
            fn = _torch_compile(_fresh(make()), opts)
            warmup(fn)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            entry = Entry(label, fn, weakref.ref(model), opts.cudagraphs, seconds=time.perf_counter() - t0)
            log.info("fast mode: compiled %s in %.1f s (%s)", label, entry.seconds, opts.mode or opts.backend)
        except Exception as exc:  # compile errors, graph breaks under fullgraph, OOM while capturing
            STATS["failures"] += 1
            if _is_oom(exc):
                reason = "out of GPU memory while capturing its CUDA graph"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            else:
                reason = f"it could not be compiled ({_first_line(exc)})"
            log.warning("fast mode: %s failed: %s", label, reason, exc_info=True)
            notify(f"{label}: {reason}; this shape runs eagerly (same picture, default speed)", logging.WARNING)
            entry = Entry(label, None, weakref.ref(model), False, error=reason, seconds=time.perf_counter() - t0)
        _cache[key] = entry
        while len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
        return entry


def _warm(fn: Callable, args: tuple, kwargs: dict, opts: CompileOptions) -> Any:
    out = None
    for _ in range(3 if opts.cudagraphs else 1):
        _mark_step(opts)
        out = fn(*args, **kwargs)
    return out


def _layout(model: torch.nn.Module) -> int:
    """A hash of what dynamo guards on the weights (dtype, strides, requires_grad): a change means a new,
    announced graph, never a silent recompile inside an old one."""
    return hash(tuple((p.dtype, p.stride(), p.requires_grad) for p in model.parameters()))


def _signature(value: Any) -> Any:
    """A hashable description of call arguments: tensor shapes/dtypes/devices, structure, plain constants."""
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.dtype, value.device.type,
                value.dim() == 4 and value.is_contiguous(memory_format=torch.channels_last))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_signature(v) for v in value))
    if isinstance(value, dict):
        return ("D", tuple((k, _signature(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return type(value).__name__


def _clone_tree(value: Any) -> Any:
    """Copy CUDA-graph outputs: the next replay overwrites them."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone_tree(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone_tree(v) for k, v in value.items()}
    return value


def ready_model(model: torch.nn.Module, device: torch.device) -> None:
    """Ready a shared model for compiled inference; the model keeps both changes, which leave its function as is.

    - `requires_grad` off: LoRA patches swap in Parameters without grad, and dynamo guards on the flag, so
      a mix would recompile the whole UNet for every LoRA run.
    - Convolution weights in channels-last on CUDA (tensor-core friendly); not on the CPU, where it would not
      help and would change the default mode's rounding there.
    """
    if any(p.requires_grad for p in model.parameters()):
        model.requires_grad_(False)
    if device.type != "cuda":
        return
    for p in model.parameters():
        if p.dim() == 4:
            if not p.is_contiguous(memory_format=torch.channels_last):
                model.to(memory_format=torch.channels_last)
            return


# model -> {weights token: layout}: `ready_model` and `_layout` walk every parameter (about 1-3 ms for a UNet),
# too slow for once per step; a model whose weights are the same objects in the same storage is ready already.
_prepared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


def _weights_token(model: torch.nn.Module, device: torch.device) -> tuple:
    """Cheap evidence of what the weights are: a move or re-cast (`.to()`) gives every parameter new storage,
    and a LoRA patch swaps parameter objects, so the first parameter's storage and flags tell the states apart
    (a patch that does not touch the first layer keeps the weights' layout: `lora_apply` copies it)."""
    p = first_parameter(model)
    if p is None:
        return (device.type, None)
    return (device.type, p.device, p.dtype, p.data_ptr(), p.requires_grad, tuple(p.stride()))


def prepare_model(model: torch.nn.Module, device: torch.device) -> int:
    """`ready_model`, then the weights' layout hash for compile keys; memoised per model and weights state,
    so the per-step callers (the stage-wise loop, PredictNoise in an edited loop body) pay microseconds."""
    token = _weights_token(model, device)
    with _prepared_lock:
        known = _prepared.get(model)
        if known is not None and token in known:
            return known[token]
    ready_model(model, device)
    layout = _layout(model)
    token = _weights_token(model, device)  # ready_model may have converted the weights
    with _prepared_lock:
        known = _prepared.setdefault(model, {})
        if len(known) >= 8:
            known.clear()
        known[token] = layout
    return layout


# ----------------------------------------------------------------------------------------------------------
# Stage-wise compiled module calls (UNet with ControlNet residuals, ControlNet, any sampler)
# ----------------------------------------------------------------------------------------------------------


def _call_module(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    return module(*args, **kwargs)


class ModuleCall:
    """Calls `model(*args, **kwargs)` through a compiled callable chosen by the arguments' shapes.

    The first call with a new signature compiles (announced); compile failures run the model eagerly.
    Attribute access goes to the model, so code that expects the module (`.config`, `.dtype`) still works.
    """

    def __init__(self, model: torch.nn.Module, what: str, device: torch.device, notify: Notifier, layout: int) -> None:
        self.model = model
        self.what = what
        self.device = device
        self.notify = notify
        self.layout = layout  # prepare_model's, from whoever placed the model for this call

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        model, opts = self.model, compile_options(self.device)
        scale = None
        if self.what == "ControlNet" and not kwargs.get("guess_mode", False) and "conditioning_scale" in kwargs:
            scale = kwargs.pop("conditioning_scale")  # a per-step float: applied outside, one graph for all
            kwargs["conditioning_scale"] = 1.0
        key = ("module", self.what, id(model), _signature(args), _signature(kwargs), self.layout,
               str(self.device), opts, active_hooks(model), ip_active_key(model))  # IP-Adapter attention installed
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        shape = "x".join(str(s) for s in first.shape) if first is not None else "?"
        with torch.no_grad(), _backend_flags(self.device):
            entry = obtain(key, model, f"{self.what} for input {shape}", lambda: _call_module,
                           lambda fn: _warm(fn, (model, *args), kwargs, opts), self.device, self.notify, self.what)
            if entry.fn is None:
                out = model(*args, **kwargs)
            else:
                _mark_step(opts)
                out = entry.fn(model, *args, **kwargs)
                if entry.cudagraphs:
                    out = _clone_tree(out)
        if scale is not None and scale != 1.0:
            down, mid = out[0], out[1]
            out = ([d * scale for d in down], mid * scale)
        return out


class FastDevices:
    """The device manager as fast mode hands it to the ControlNet code: `use()` yields a compiling caller.

    Lets the ControlNet residual code (nodes/sd/controlnet.py) run its model compiled without a change there;
    everything else is the real DeviceManager.
    """

    def __init__(self, devices: Any, notify: Notifier) -> None:
        self._devices = devices
        self._notify = notify

    def __getattr__(self, name: str) -> Any:
        return getattr(self._devices, name)

    @contextlib.contextmanager
    def use(self, module: Any, dtype: Any = None) -> Iterator[Any]:
        with self._devices.use(module, dtype) as model:
            layout = prepare_model(model, self._devices.device)
            yield ModuleCall(model, "ControlNet", self._devices.device, self._notify, layout)


def stage_hooks(ctx: Any) -> tuple[Callable[[torch.nn.Module], Callable[..., Any]], FastDevices]:
    """For the PredictNoise node: (UNet runner for `denoise.predict_noise`, devices for `control_for_step`)."""
    return unet_runner(ctx), FastDevices(ctx.settings.devices(), Notifier(ctx))


def unet_runner(ctx: Any) -> Callable[[torch.nn.Module], Callable[..., Any]]:
    """For `denoise.predict_noise(runner=...)`: the placed, patched UNet -> a compiled caller."""
    devices = ctx.settings.devices()
    prepare_process(ctx.settings)
    notify = Notifier(ctx)

    def bind(model: torch.nn.Module) -> Callable[..., Any]:
        layout = prepare_model(model, devices.device)
        return ModuleCall(model, "UNet", devices.device, notify, layout)

    return bind


from .denoise import model_conditioning  # noqa: E402,F401  (shared with the default path)


# ----------------------------------------------------------------------------------------------------------
# Progress and previews without a GPU sync per step
# ----------------------------------------------------------------------------------------------------------


class Progress:
    """Progress every step; a latent preview every `total // 8` steps, copied to pinned host memory on the
    stream and handed over once its copy has finished (event query, never a wait). The last step's preview
    is taken synchronously: the result is copied to the host right after anyway."""

    def __init__(self, ctx: Any, latent: Any, total: int, device: torch.device) -> None:
        self.ctx, self.latent, self.total = ctx, latent, total
        self.every = max(1, total // 8)  # the default mode's cadence (nodes.sampling._preview_every)
        self.cuda = device.type == "cuda"
        self.pending: list[tuple[Any, torch.Tensor]] = []

    def step(self, i: int, x: torch.Tensor) -> None:
        done = i + 1
        preview = None
        if done == self.total:
            self.pending.clear()
            preview = self.latent.with_samples(x.detach().to("cpu", copy=True))
        else:
            if done % self.every == 0:
                if self.cuda:
                    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
                    host.copy_(x, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                    self.pending.append((event, host))
                else:
                    self.pending.append((None, x.detach().clone()))
            ready = None
            while self.pending and (self.pending[0][0] is None or self.pending[0][0].query()):
                ready = self.pending.pop(0)[1]
            if ready is not None:
                preview = self.latent.with_samples(ready)
        self.ctx.progress(done, self.total, preview=preview)


# ----------------------------------------------------------------------------------------------------------
# Sampling entry points (hooks in nodes/sampling.py)
# ----------------------------------------------------------------------------------------------------------


def is_default_body(ctx: Any) -> bool:
    """Whether the DenoiseLoop node being run has the default body (then its fused equivalent may run)."""
    from nodes.sampling import DEFAULT_DENOISE_BODY

    workflow = getattr(ctx, "workflow", None)
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    entry = nodes.get(getattr(ctx, "node_id", "")) if isinstance(nodes, dict) else None
    if not isinstance(entry, dict):
        return False
    body = entry.get("body")
    return body is None or _strip_ui(body) == _strip_ui(DEFAULT_DENOISE_BODY)


def _strip_ui(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_ui(v) for k, v in value.items() if k != "ui"}
    if isinstance(value, list):
        return [_strip_ui(v) for v in value]
    return value


def sample(unet: Any, positive: Any, negative: Any, latent: Any, noise_spec: Any, spec: Any, cfg: float,
           guidance_rescale: float, ctx: Any, start_step: int = 0, end_step: int | None = None,
           add_noise: bool = True) -> Any:
    """Fast-mode `nodes.sampling.run_sampler`: the same arguments and the same picture (within fp16 rounding)."""
    from .denoise import is_combined, prepare_range, uses_cfg

    settings = ctx.settings
    devices = settings.devices()
    prepare_process(settings)
    prepare_model(unet.model, devices.device)  # before LoRA patches swap weights in: their originals too
    state, x = prepare_range(unet, latent, noise_spec, spec, devices, start_step, end_step, add_noise)
    use_cfg = uses_cfg(cfg, negative)
    neg = negative if use_cfg else None
    notify = Notifier(ctx)
    recipe, why = fused_recipe(state, use_cfg, guidance_rescale)
    if recipe is not None and (is_combined(positive) or is_combined(neg)):
        recipe, why = None, "combined or step-limited conditioning (predicted prompt by prompt)"
    if recipe is not None and unet.cfg_rescale and use_cfg:
        recipe, why = None, "RescaleCFG (guidance in v space)"
    if recipe is not None and (positive.image_prompts or (neg is not None and neg.image_prompts)):
        # the fused step calls the UNet without IP-Adapter image tokens; stage-wise, predict_noise passes them
        recipe, why = None, "IP-Adapter image prompts (the UNet call takes per-call image tokens)"
    controls = None
    if recipe is not None and (positive.controls or (neg is not None and neg.controls)):
        channels = int(unet.in_channels)
        width = int(positive.embeds.shape[-1])
        controls, why = fused_controls(positive, neg, state, x, width, unet.is_sdxl, channels, use_cfg)
        if controls is None and why:
            recipe = None
        elif controls is not None:
            recipe = dc_replace(recipe, controls=controls.plan)
    t0 = time.perf_counter()
    if recipe is not None:
        out = _fused_loop(recipe, unet, positive, neg, latent, state, x, cfg, guidance_rescale, devices, ctx, notify,
                          controls)
        if out is not None:
            return latent.with_samples(out.cpu())
        path, runner = "eager", None  # the fused step failed to compile: the default code, default speed
    else:
        log.debug("fast mode: stage-wise sampling (%s)", why)
        path, runner = "stagewise", unet_runner(ctx)
    x = _stagewise_loop(unet, positive, neg, latent, state, x, cfg, guidance_rescale, devices, ctx, runner,
                        FastDevices(devices, notify) if runner is not None else devices)
    _record(path, state.total, t0, time.perf_counter())
    return latent.with_samples(x.cpu())


def _record(path: str, steps: int, t0: float, t_enqueued: float, compiled_s: float = 0.0) -> None:
    LAST_RUN.clear()
    LAST_RUN.update(path=path, steps=steps, host_ms_per_step=1000 * (t_enqueued - t0) / max(1, steps),
                    compile_seconds=compiled_s)


def _stagewise_loop(unet: Any, positive: Any, neg: Any, latent: Any, state: Any, x: torch.Tensor, cfg: float,
                    rescale: float, devices: Any, ctx: Any, runner: Any, control_devices: Any) -> torch.Tensor:
    """nodes.sampling.run_sampler's loop, with the UNet/ControlNet calls compiled (runner) or eager (None)."""
    from .control import control_for_step
    from .denoise import apply_guidance, predict_noise, scheduler_step

    progress = Progress(ctx, latent, state.total, devices.device)
    use_cfg = neg is not None
    for i, t in enumerate(state.timesteps):
        control = control_for_step(positive, neg, state, i, control_devices)
        pred = predict_noise(unet, x, t, positive, neg, state, devices, guidance=use_cfg, control=control,
                             runner=runner, step=i)
        pred = apply_guidance(pred, cfg, rescale)
        x = scheduler_step(state, pred, t, x, i)
        progress.step(i, x)
    return x


def _fused_loop(recipe: Recipe, unet: Any, positive: Any, neg: Any, latent: Any, state: Any, x: torch.Tensor,
                cfg: float, rescale: float, devices: Any, ctx: Any, notify: Notifier,
                controls: FusedControls | None = None) -> torch.Tensor | None:
    """Run every step as one compiled call; None when the step cannot be compiled for this shape (nothing
    of the sampling state has been touched then, so the caller can run the default loop instead)."""
    from .patching import applied

    device, n = devices.device, len(state.timesteps)
    opts = compile_options(device)
    b = x.shape[0]
    embeds, text_embeds, time_ids = model_conditioning(unet, positive, neg, state, b, recipe.cfg)
    inpaint = None
    if state.inpaint is not None:
        from .denoise import _batch

        extra = torch.cat([state.inpaint] * 2) if recipe.cfg else state.inpaint
        inpaint = _batch(extra, b * (2 if recipe.cfg else 1))
    table = step_constants(recipe, state).to(device)
    consts = [table[i].clone() for i in range(n)]
    times = [state.timesteps[i].to(device).clone() for i in range(n)]
    cfg_t = torch.tensor(float(cfg), dtype=torch.float32, device=device)
    rescale_t = torch.tensor(float(rescale), dtype=torch.float32, device=device)
    prev = torch.zeros_like(x) if recipe.history else None
    h, w = state.image_size
    label = f"UNet for {w}x{h} batch {b}"
    t_start = time.perf_counter()
    compiled_s = 0.0
    with torch.no_grad(), applied(unet, devices) as model, _backend_flags(device), contextlib.ExitStack() as stack:
        controlnets = tuple(stack.enter_context(devices.use(c.model)) for c in controls.handles) if controls else ()
        strengths = [row.clone() for row in controls.strengths.to(device)] if controls else [None] * n
        hints = controls.hints if controls else ()
        key = ("step", id(model), recipe, _signature((x, times[0], consts[0], embeds, text_embeds, time_ids, inpaint)),
               prepare_model(model, device), str(device), opts, active_hooks(model),
               tuple((id(m), prepare_model(m, device)) for m in controlnets), _signature(hints))
        dummy_noise = torch.zeros_like(x) if recipe.noise else None
        args0 = (model, x, times[0], consts[0], embeds, text_embeds, time_ids, inpaint, cfg_t, rescale_t, dummy_noise, prev,
                 controlnets, hints, strengths[0])
        hits = STATS["hits"]
        entry = obtain(key, model, label, lambda: make_step(recipe), lambda fn: _warm(fn, args0, {}, opts), device, notify)
        if STATS["hits"] == hits:
            compiled_s = entry.seconds
        if entry.fn is None:
            return None
        fn = entry.fn
        noises: list[Any] = [None] * n
        if recipe.noise:  # the generator's draws, in diffusers' order: one per step, after the initial noise
            g = state.generator
            drawn = torch.stack([torch.randn(x.shape, generator=g, dtype=x.dtype, device="cpu") for _ in range(n)])
            if device.type == "cuda":
                drawn = drawn.pin_memory()
            drawn = drawn.to(device, non_blocking=True)
            noises = [drawn[i].clone() for i in range(n)]
        progress = Progress(ctx, latent, state.total, device)
        t0 = time.perf_counter()
        for i in range(n):
            _mark_step(opts)
            x_next, m = fn(model, x, times[i], consts[i], embeds, text_embeds, time_ids, inpaint, cfg_t, rescale_t,
                           noises[i], prev, controlnets, hints, strengths[i])
            if entry.cudagraphs:  # graph outputs are overwritten by the next replay
                x_next = x_next.clone()
                m = m.clone() if m is not None else None
            x, prev = x_next, m
            if i + 1 < n:
                progress.step(i, x)
        t_enqueued = time.perf_counter()
        progress.step(n - 1, x)  # the last one copies to the host: the only wait of the loop
    _record("fused", n, t0, t_enqueued, compiled_s)
    log.debug("fast mode: %d steps in %.3f s (incl. %.1f s compile)", n, time.perf_counter() - t_start, compiled_s)
    return x


# ----------------------------------------------------------------------------------------------------------
# VAE decode (hook in nodes/vae.py)
# ----------------------------------------------------------------------------------------------------------


def _make_decode(scaling: float, shift: float) -> Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]:
    def vae_decode(vae: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
        img = vae.decode(z / scaling + shift, return_dict=False)[0]
        img = (img / 2 + 0.5).clamp(0, 1)
        return img.float().permute(0, 2, 3, 1).contiguous()

    return vae_decode


def decode(vae: Any, latent: Any, ctx: Any) -> torch.Tensor:
    """vae_ops.decode, compiled per latent shape (a [B,H,W,3] float image on the CPU)."""
    from engine.node import NodeError

    from .denoise import check_family

    check_family("the latent", latent.family, vae.family, "VAE", latent=True)
    if latent.samples.shape[1] != vae.latent_channels:
        raise NodeError(f"the latent has {latent.samples.shape[1]} channels, the VAE expects {vae.latent_channels}")
    settings = ctx.settings
    devices = settings.devices()
    prepare_process(settings)
    from .vae_ops import compute_dtype  # the default mode's rule: the SDXL VAE in fp32 under fp16

    device, dtype = devices.device, compute_dtype(vae, devices)
    opts = compile_options(device)
    make = lambda: _make_decode(vae.scaling_factor, vae.shift_factor)  # noqa: E731
    with torch.no_grad(), devices.use(vae.model, dtype) as model, _backend_flags(device):
        layout = prepare_model(model, device)
        z = latent.samples.to(device, dtype)
        b, _, h, w = z.shape
        label = f"VAE decode for {w * vae.downscale}x{h * vae.downscale} batch {b}"
        entry = Entry(label, None, weakref.ref(model), False, error="disabled")
        if _flag("LOOM_FAST_VAE"):
            key = ("vae-decode", id(model), _signature(z), vae.scaling_factor, vae.shift_factor, layout,
                   str(device), opts)
            entry = obtain(key, model, label, make, lambda fn: _warm(fn, (model, z), {}, opts), device,
                           Notifier(ctx), "VAE")
        if entry.fn is None:
            return make()(model, z).cpu()
        _mark_step(opts)
        return entry.fn(model, z).cpu()


__all__ = [
    "FUSED_KINDS", "CompileOptions", "Entry", "FastDevices", "FusedControls", "LAST_RUN", "ModuleCall", "Notifier",
    "Progress", "Recipe", "STATS", "cache_size", "clear_cache", "compile_options", "decode", "fused_controls",
    "fused_recipe", "is_default_body", "make_step", "model_conditioning", "obtain", "prepare_model",
    "prepare_process", "ready_model", "route_notices", "sample", "scheduler_update", "stage_hooks", "step_constants",
    "unet_runner", "update_ddim", "update_dpmpp_2m", "update_euler", "update_euler_a",
]
