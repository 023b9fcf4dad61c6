"""The executor: runs a validated graph in order, takes what it can from the cache, emits typed events.

Work skipped is work never started: every node's signature is computed first, cached outputs are taken
out of the cache before anything runs (so a later eviction cannot pull them away mid-run), and only the
rest is executed. A node that raises stops the run with an event naming the node; the executor and its
cache stay usable. Loop nodes run their body graph once per iteration with a pre-compiled plan, so the
engine's cost per body node per iteration is a few dictionary operations.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from . import events as ev
from .cache import OutputCache, signature
from .graph import LOOP_INPUT, LOOP_OUTPUT, Body, Graph, GraphError, GNode, InvalidWorkflow, validate
from .node import Interrupted, NodeContext, NodeDef, NodeError, NodeUI
from .registry import Registry
from .settings import Settings

log = logging.getLogger(__name__)

EventSink = Callable[[ev.Event], None]


@dataclass(frozen=True)
class NodeReport:
    status: str  # success | cached | error | interrupted | pending
    cached: bool = False
    seconds: float = 0.0


_CACHED = NodeReport("cached", True, 0.0)


@dataclass
class RunResult:
    run_id: str
    status: str  # success | error | interrupted | invalid
    nodes: dict[str, NodeReport] = field(default_factory=dict)
    ui: dict[str, NodeUI] = field(default_factory=dict)
    error: dict | None = None
    signatures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def output_paths(self, settings: Settings) -> dict[str, list[str]]:
        folders = settings.folders()
        out: dict[str, list[str]] = {}
        for nid, ui in self.ui.items():
            out[nid] = [str((folders.folder_of(f.type) / f.subfolder / f.filename).resolve()) for f in ui.images]
        return out

    def to_json(self, settings: Settings) -> dict:
        """The CLI's `--json` document (DESIGN.md section 2)."""
        return {
            "status": "success" if self.status == "success" else "error",
            "nodes": {nid: {"status": r.status, "cached": r.cached, "seconds": round(r.seconds, 6)} for nid, r in self.nodes.items()},
            "outputs": self.output_paths(settings),
            "error": self.error,
        }


class _Emitter:
    """Builds event objects only when someone listens: a fully cached 1,000-node run stays cheap."""

    def __init__(self, sinks: list[EventSink], run_id: str):
        self.sinks = sinks
        self.run_id = run_id

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def __call__(self, cls: type[ev.Event], **data: Any) -> None:
        if not self.sinks:
            return
        event = cls(run_id=self.run_id, **data)
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a broken listener must never break a run
                log.exception("event listener failed")


class Executor:
    def __init__(self, registry: Registry, settings: Settings | None = None, cache: OutputCache | None = None) -> None:
        self.registry = registry
        self.settings = settings or Settings()
        self.cache = cache if cache is not None else OutputCache(self.settings.cache_bytes)
        self.listeners: list[EventSink] = []
        self._lock = threading.Lock()  # one run at a time per executor (models are shared state)

    # ------------------------------------------------------------------------------------------------
    def validate(self, workflow: Any, targets: list[str] | None = None) -> tuple[Graph | None, list[GraphError]]:
        return validate(workflow, self.registry, self.settings, targets)

    def run(
        self,
        workflow: Any,
        *,
        targets: list[str] | None = None,
        run_id: str | None = None,
        on_event: EventSink | None = None,
        interrupt: threading.Event | None = None,
        prompt: dict | None = None,
    ) -> RunResult:
        """Validate and run. Invalid input gives status "invalid" with the errors; nothing raises for it."""
        run_id = run_id or uuid.uuid4().hex
        sinks = list(self.listeners) + ([on_event] if on_event else [])
        emit = _Emitter(sinks, run_id)
        if isinstance(workflow, Graph):
            graph, errors = workflow, []
        else:
            graph, errors = self.validate(workflow, targets)
        if graph is None:
            err = {"node_id": errors[0].node_id, "node_type": None, "error_type": "InvalidWorkflow",
                   "message": str(InvalidWorkflow(errors)), "errors": [e.model_dump() for e in errors]}
            emit(ev.RunFailed, node_id=err["node_id"], node_type=None, error_type="InvalidWorkflow",
                 message=err["message"], errors=err["errors"])
            return RunResult(run_id=run_id, status="invalid", error=err)
        with self._lock:
            return self._run(graph, run_id, emit, interrupt or threading.Event(), prompt)

    # ------------------------------------------------------------------------------------------------
    def signatures(self, graph: Graph, nonce: str = "") -> dict[str, str]:
        sigs: dict[str, str] = {}
        settings = self.settings
        nodes = graph.nodes
        for nid in graph.order:
            g = nodes[nid]
            d = g.d
            if d.fingerprint is None and d.deterministic and g.body is None:  # the common case, inlined
                sigs[nid] = signature(d.name, g.literals, {i: f"{sigs[src]}:{out}" for i, (src, out) in g.links.items()})
            else:
                sigs[nid] = self._signature(g, sigs, nonce, settings)
        return sigs

    def _signature(self, g: GNode, sigs: Mapping[str, str], nonce: str, settings: Settings) -> str:
        d = g.d
        assert d is not None
        extra = ""
        if d.fingerprint is not None:
            try:
                extra = str(d.fingerprint(dict(g.literals), settings))
            except Exception as exc:  # a file that vanished: let the node itself report it when it runs
                extra = f"fingerprint-error:{exc}"
        if getattr(settings, "fast", False):  # fast mode's pictures differ within fp16 tolerance: cache apart
            extra += "|fast"
        if not d.deterministic:
            extra += "|nonce:" + nonce
        if g.body is not None:
            extra += "|body:" + self._body_signature(g.body, sigs, nonce, settings)
        upstream = {i: f"{sigs[src]}:{out}" for i, (src, out) in g.links.items()}
        return signature(d.name, g.literals, upstream, extra)

    def _body_signature(self, body: Body, outer: Mapping[str, str], nonce: str, settings: Settings) -> str:
        """The signature of what a body computes: its nodes' signatures, as for any graph, with LoopInput as
        a fixed token and the outer nodes it reads by their signatures. Ids never enter it (nor do unused
        nodes or `ui`), and nested bodies, fingerprints and non-deterministic body nodes count."""
        local: dict[str, str] = {}
        scope = ChainMap(local, outer)  # type: ignore[arg-type]
        for nid in body.order:
            n = body.nodes[nid]
            if n.type == LOOP_INPUT:
                local[nid] = LOOP_INPUT
            elif n.d is None:  # LoopOutput
                local[nid] = signature(LOOP_OUTPUT, n.literals, {i: f"{scope[src]}:{out}" for i, (src, out) in n.links.items()})
            else:
                local[nid] = self._signature(n, scope, nonce, settings)
        return local[body.output_id]

    def _run(self, graph: Graph, run_id: str, emit: _Emitter, interrupt: threading.Event, prompt: dict | None) -> RunResult:
        t_run = time.perf_counter()
        nonce = uuid.uuid4().hex
        sigs = self.signatures(graph, nonce)
        result = RunResult(run_id=run_id, status="success", signatures=sigs)
        values: dict[str, dict[str, Any]] = {}
        cached_ids: list[str] = []
        cache = self.cache
        for nid in graph.order:
            hit = cache.get(sigs[nid])
            if hit is not None:
                values[nid] = hit
                cached_ids.append(nid)
        emit(ev.RunStarted, nodes=list(graph.order))
        if cached_ids:
            emit(ev.NodesCached, nodes=cached_ids)
        folders = self.settings.folders()
        nodes_report = result.nodes
        current: GNode | None = None
        try:
            for nid in graph.order:
                g = graph.nodes[nid]
                d = g.d
                assert d is not None
                if nid in values:
                    nodes_report[nid] = _CACHED
                    ui = values[nid].get("__ui__")
                    if ui is not None:
                        result.ui[nid] = ui
                        emit(ev.NodeFinished, node_id=nid, node_type=d.name, seconds=0.0, cached=True, ui=ui.model_dump())
                    continue
                if interrupt.is_set():
                    raise Interrupted("interrupted before node " + nid)
                current = g
                emit(ev.NodeStarted, node_id=nid, node_type=d.name)
                t0 = time.perf_counter()
                kwargs = dict(g.literals)
                for iname, (src, out) in g.links.items():
                    kwargs[iname] = values[src][out]
                ctx = None  # only nodes that take a context (and loops) get one: most pure functions do not
                if d.context_param is not None or g.body is not None:
                    ctx = NodeContext(node_id=nid, node_type=d.name, run_id=run_id, folders=folders, settings=self.settings,
                                      workflow=graph.raw, prompt=prompt, interrupt_event=interrupt,
                                      emit=self._node_emitter(emit, nid) if emit else None)
                if g.body is not None:
                    outputs, body_values = _run_loop(g, d, kwargs, ctx, values)
                    self._keep_body_values(nid, sigs[nid], body_values, result)
                else:
                    outputs = d.call(kwargs, ctx)
                seconds = time.perf_counter() - t0
                values[nid] = outputs
                cache.put(sigs[nid], outputs)
                nodes_report[nid] = NodeReport("success", False, seconds)
                ui = outputs.get("__ui__")
                if ui is not None:
                    result.ui[nid] = ui
                emit(ev.NodeFinished, node_id=nid, node_type=d.name, seconds=seconds, cached=False,
                     ui=ui.model_dump() if ui is not None else None)
                current = None
        except Interrupted:
            nid = current.id if current else None
            if nid:
                nodes_report[nid] = NodeReport("interrupted")
            result.status = "interrupted"
            result.error = {"node_id": nid, "node_type": current.type if current else None,
                            "error_type": "Interrupted", "message": "interrupted by the user"}
            emit(ev.RunInterrupted, node_id=nid, node_type=current.type if current else None)
        except Exception as exc:
            failed_id = getattr(exc, "loom_node_id", None) or (current.id if current else None)
            failed_type = getattr(exc, "loom_node_type", None) or (current.type if current else None)
            if current is not None:
                nodes_report[current.id] = NodeReport("error")
            message = _describe(exc)
            log.error("node %s (%s) failed: %s\n%s", failed_id, failed_type, message, traceback.format_exc())
            result.status = "error"
            result.error = {"node_id": failed_id, "node_type": failed_type, "error_type": type(exc).__name__, "message": message}
            emit(ev.RunFailed, node_id=failed_id, node_type=failed_type, error_type=type(exc).__name__, message=message)
        if result.status != "success":  # what a failure or interrupt kept from running
            for nid in graph.order:
                if nid not in nodes_report:
                    nodes_report[nid] = NodeReport("pending")
        result.seconds = time.perf_counter() - t_run
        if result.status == "success":
            emit(ev.RunFinished, seconds=result.seconds)
        return result

    def _keep_body_values(self, loop_id: str, loop_sig: str, body_values: dict, result: RunResult) -> None:
        """The last iteration's values of each body node, cached like any output, so the editor can
        inspect `loop_id/body_id` after the run (one iteration's tensors: small next to the loop's)."""
        for body_id, vals in body_values.items():
            if not isinstance(vals, dict):
                continue
            sig = signature("LoopBodyValues", {"node": body_id}, {"loop": loop_sig})
            self.cache.put(sig, vals)
            result.signatures[f"{loop_id}/{body_id}"] = sig

    @staticmethod
    def _node_emitter(emit: _Emitter, nid: str) -> Callable[[str, dict], None]:
        def node_emit(kind: str, data: dict) -> None:
            if kind == "progress":
                emit(ev.NodeProgress, node_id=nid, value=data["value"], max=data.get("max"), preview=data.get("preview"),
                     text=data.get("text"))
            elif kind == "warning":
                emit(ev.NodeWarning, node_id=nid, message=data["message"])
        return node_emit



def _run_loop(g: GNode, d: NodeDef, kwargs: dict, ctx: NodeContext,
              outer: Mapping[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Drive a loop node's generator: each yielded body input runs the body graph once.

    Returns the loop's outputs and the body's last values. `outer` holds the values of the graphs around
    the body (for a nested loop: the enclosing body's, then the top level's).
    """
    body = g.body
    assert body is not None
    if d.context_param is not None:
        kwargs[d.context_param] = ctx
    gen = d.func(**kwargs)
    plan = _BodyPlan(body, outer, ctx, ctx.node_id or g.id)
    interrupt = ctx.interrupt_event
    try:
        sent = next(gen)
        while True:
            if interrupt is not None and interrupt.is_set():
                raise Interrupted("interrupted in loop " + g.id)
            outs = plan.run(sent.as_dict() if hasattr(sent, "as_dict") else dict(sent))
            sent = gen.send(outs)
    except StopIteration as stop:
        return d.normalise_result(stop.value), plan.local
    finally:
        gen.close()  # on an error or interrupt in the body, run the loop's own clean-up (finally blocks)


class _BodyPlan:
    """A loop body compiled once: bindings resolved to (kind, source, output) so each iteration is cheap.

    Nodes that do not depend on the loop's per-iteration values run once and are reused.
    """

    def __init__(self, body: Body, outer: Mapping[str, dict[str, Any]], ctx: NodeContext, loop_id: str) -> None:
        self.body = body
        self.outer = outer
        self.local: dict[str, dict[str, Any]] = {}
        variant: set[str] = set()
        for nid in body.order:  # topological: a node varies if any input comes from LoopInput or a varying node
            n = body.nodes[nid]
            deps = [src for src, _ in n.links.values()]
            if n.body is not None:  # a nested loop also reads what its own body reads
                deps.extend(n.body.outer_deps)
            if n.type == LOOP_INPUT or any(src in variant for src in deps if src in body.nodes):
                variant.add(nid)
        self.steps: list[tuple[str, NodeDef | None, dict, list[tuple[str, bool, str, str]], NodeContext | None, GNode]] = []
        self.invariant: list = []
        for nid in body.order:
            n = body.nodes[nid]
            if n.type == LOOP_INPUT:
                continue
            binds = [(iname, src in body.nodes, src, out) for iname, (src, out) in n.links.items()]
            node_ctx = None
            if n.d is not None:
                node_ctx = NodeContext(node_id=f"{loop_id}/{nid}", node_type=n.type, run_id=ctx.run_id, folders=ctx.folders,
                                       settings=ctx.settings, workflow=ctx.workflow, prompt=ctx.prompt,
                                       interrupt_event=ctx.interrupt_event)
            step = (nid, n.d, n.literals, binds, node_ctx, n)
            (self.steps if nid in variant or n.type == LOOP_OUTPUT else self.invariant).append(step)
        self._invariant_done = False
        self.input_ids = [nid for nid in body.order if body.nodes[nid].type == LOOP_INPUT]

    def _exec(self, steps: list) -> dict[str, Any] | None:
        local, outer = self.local, self.outer
        result = None
        for nid, d, literals, binds, node_ctx, n in steps:
            kwargs = dict(literals)
            for iname, is_local, src, out in binds:
                kwargs[iname] = (local if is_local else outer)[src][out]
            if d is None:  # LoopOutput
                result = kwargs
                continue
            try:
                if n.body is not None:  # a nested loop: its body sees this body's values, then ours' outer ones
                    local[nid] = _run_loop(n, d, kwargs, node_ctx, ChainMap(local, outer))[0]  # type: ignore[arg-type]
                else:
                    local[nid] = d.call(kwargs, node_ctx)
            except Interrupted:
                raise
            except StopIteration as exc:  # must not look like the end of the loop to the generator driver
                err = RuntimeError(f"node raised StopIteration {exc}".strip())
                err.loom_node_id = node_ctx.node_id  # type: ignore[attr-defined,union-attr]
                err.loom_node_type = d.name  # type: ignore[attr-defined]
                raise err from exc
            except Exception as exc:
                if getattr(exc, "loom_node_id", None) is None:  # keep the innermost node of nested loops
                    exc.loom_node_id = node_ctx.node_id  # type: ignore[attr-defined,union-attr]
                    exc.loom_node_type = d.name  # type: ignore[attr-defined]
                raise
        return result

    def run(self, loop_values: dict[str, Any]) -> dict[str, Any]:
        for nid in self.input_ids:
            self.local[nid] = loop_values
        if not self._invariant_done:
            self._exec(self.invariant)
            self._invariant_done = True
        out = self._exec(self.steps)
        assert out is not None
        return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, NodeError):
        return str(exc)
    text = str(exc) or type(exc).__name__
    if type(exc).__name__ == "OutOfMemoryError":
        text = "out of GPU memory: " + text.splitlines()[0] + " (try a smaller size or batch, tiled VAE decode, or --device cpu)"
        _release_gpu_cache()
    return text


def _release_gpu_cache() -> None:
    """After an out-of-memory error, hand the allocator's cached blocks back so the next run can start."""
    import sys

    torch = sys.modules.get("torch")  # the engine never imports torch itself
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()

