"""`loom`: run, validate and list nodes from the command line (and `serve`, `submit`, `eval`).

Exit codes: 0 success, 1 a run-time error (or interrupt), 2 an invalid workflow or invalid arguments.
Progress goes to stderr; `--json` prints exactly one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from .settings import Settings, offline


class UsageError(Exception):
    pass


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_sets(workflow: dict, sets: Sequence[str]) -> dict:
    """Apply `NODE.INPUT=VALUE` overrides; VALUE is JSON when it parses as JSON, else a string."""
    nodes = workflow.get("nodes") if isinstance(workflow, dict) else None
    for item in sets:
        if "=" not in item:
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE")
        target, value = item.split("=", 1)
        if "." not in target:
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE")
        node_id, input_name = target.rsplit(".", 1)
        if not isinstance(nodes, dict) or node_id not in nodes or not isinstance(nodes[node_id], dict):
            known = sorted(map(str, nodes))[:30] if isinstance(nodes, dict) else []
            raise UsageError(f"--set {item!r}: no node {node_id!r} in the workflow (nodes: {known})")
        inputs = nodes[node_id].setdefault("inputs", {})
        if not isinstance(inputs, dict):
            raise UsageError(f"--set {item!r}: node {node_id!r} has no 'inputs' object")
        inputs[input_name] = _parse_value(value)
    return workflow


def load_any_workflow(path: str | Path, registry: Any = None) -> tuple[dict, dict | None]:
    """Read our format, a ComfyUI API-format prompt or a ComfyUI editor (LiteGraph) workflow; returns (our
    workflow, the ComfyUI prompt or None). What a ComfyUI workflow loses in translation is said on stderr.

    `registry` (a callable giving the node registry, called only for ComfyUI files) lets ComfyUI classes that are
    our own nodes under their own names (ConditioningCombine, ImageFlip, ...) translate, as the server's do."""
    from .workflow import read_json

    data = read_json(path)
    from .compat.comfy import is_comfy_prompt, is_litegraph_workflow, litegraph_to_workflow, prompt_to_workflow

    if is_comfy_prompt(data):
        return prompt_to_workflow(data, registry() if registry else None), data
    if is_litegraph_workflow(data):
        workflow, warnings = litegraph_to_workflow(data, registry() if registry else None)
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return workflow, None
    return data, None


def _settings_from(args: argparse.Namespace) -> Settings:
    s = Settings()
    if getattr(args, "models_dir", None):
        s.models_dir = Path(args.models_dir)
    if getattr(args, "out", None):
        s.output_dir = Path(args.out)
    if getattr(args, "input_dir", None):
        s.input_dir = Path(args.input_dir)
    if getattr(args, "device", None):
        s.device = args.device
    if getattr(args, "fast", False):
        s.fast = True
    if getattr(args, "dtype", None):
        s.dtype = args.dtype
    return s


def _registry():
    from .registry import Registry

    return Registry.default()


class _Progress:
    """Human progress on stderr: one line per node, a bar for nodes that report steps."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr  # looked up now: callers may redirect it
        self.tty = self.stream.isatty()

    def __call__(self, event) -> None:
        t = event.type
        w = self.stream.write
        if t == "nodes_cached":
            w(f"cached: {', '.join(event.nodes)}\n")
        elif t == "node_started":
            w(f"> {event.node_id} ({event.node_type})\n")
        elif t == "node_progress":
            if event.max:
                frac = event.value / event.max
                bar = "#" * int(frac * 30)
                end = "\r" if self.tty and event.value < event.max else "\n"
                w(f"  [{bar:<30}] {event.value:g}/{event.max:g}{end}")
        elif t == "node_warning":
            w(f"  warning ({event.node_id}): {event.message}\n")
        elif t == "node_finished" and not event.cached:
            w(f"  done {event.node_id} in {event.seconds:.3f}s\n")
        elif t == "run_failed" and not event.errors:  # validation errors are printed by the command, one a line
            w(f"error in node {event.node_id} ({event.node_type}): {event.error_type}: {event.message}\n")
        elif t == "run_interrupted":
            w("interrupted\n")
        self.stream.flush()


def cmd_run(args: argparse.Namespace) -> int:
    from .executor import Executor
    from .workflow import WorkflowError, check_envelope

    settings = _settings_from(args)
    try:
        workflow, prompt = load_any_workflow(args.workflow, _registry)
        apply_sets(workflow, args.set or [])
        check_envelope(workflow)  # a wrong file is told at once, before the node families are imported
    except (WorkflowError, UsageError) as exc:
        return _fail_invalid(args, str(exc))
    except ValueError as exc:  # ComfyUI translation errors
        return _fail_invalid(args, str(exc))
    wf_settings = workflow.get("settings") if isinstance(workflow, dict) else None
    if isinstance(wf_settings, dict) and wf_settings.get("fast") is True:
        settings.fast = True
    executor = Executor(_registry(), settings)
    interrupt = threading.Event()

    def on_sigint(signum, frame):  # first Ctrl+C interrupts cleanly, the second kills
        interrupt.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = None
    if threading.current_thread() is threading.main_thread():  # signals only work there (main() may be embedded)
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = executor.run(workflow, on_event=_Progress(), interrupt=interrupt, prompt=prompt)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if result.status == "invalid":
        assert result.error is not None
        if args.json:
            print(json.dumps({"status": "error", "nodes": {}, "outputs": {}, "error": result.error}))
        else:
            for e in result.error["errors"]:
                sys.stderr.write(_format_error(e) + "\n")
        return 2
    if args.json:
        print(json.dumps(result.to_json(settings)))
    else:
        for nid, paths in result.output_paths(settings).items():
            for p in paths:
                print(p)
    return 0 if result.status == "success" else 1


def _format_error(e: dict) -> str:
    where = ""
    if e.get("node_id") is not None:
        where = f"node {e['node_id']}" + (f", input {e['input']}" if e.get("input") else "") + ": "
    return f"{where}{e['message']} [{e['code']}]"


def _fail_invalid(args: argparse.Namespace, message: str) -> int:
    """A file we cannot use at all: exit 2, one line on stderr (or the command's JSON document)."""
    if getattr(args, "json", False):
        errors = [{"node_id": None, "input": None, "code": "invalid_workflow", "message": message}]
        if getattr(args, "func", None) is cmd_validate:
            print(json.dumps({"valid": False, "errors": errors}))
        else:
            print(json.dumps({"status": "error", "nodes": {}, "outputs": {},
                              "error": {"node_id": None, "node_type": None, "error_type": "InvalidWorkflow",
                                        "message": message, "errors": errors}}))
    else:
        sys.stderr.write(f"error: {message}\n")
    return 2


def cmd_validate(args: argparse.Namespace) -> int:
    from .graph import validate
    from .workflow import WorkflowError, check_envelope

    settings = _settings_from(args)
    try:
        workflow, _ = load_any_workflow(args.workflow, _registry)
        check_envelope(workflow)
    except (WorkflowError, ValueError) as exc:
        return _fail_invalid(args, str(exc))
    graph, errors = validate(workflow, _registry(), settings)
    if args.json:
        print(json.dumps({"valid": graph is not None, "errors": [e.model_dump() for e in errors]}))
    else:
        for e in errors:
            sys.stderr.write(_format_error(e.model_dump()) + "\n")
        if graph is not None:
            sys.stderr.write(f"valid: {len(graph.nodes)} nodes, {len(graph.order)} to run\n")
    return 0 if graph is not None else 2


def cmd_nodes(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    reg = _registry()
    catalog = reg.catalog_json(settings)
    if args.json:
        print(json.dumps(catalog))
        return 0
    by_cat: dict[str, list] = {}
    for n in catalog["nodes"].values():
        by_cat.setdefault(n["category"], []).append(n)
    for cat in sorted(by_cat):
        print(f"{cat}:")
        for n in sorted(by_cat[cat], key=lambda n: n["name"]):
            ins = ", ".join(f"{i['name']}: {i['type']}" for i in n["inputs"])
            outs = ", ".join(f"{o['name']}: {o['type']}" for o in n["outputs"])
            first = n["description"].splitlines()[0] if n["description"] else ""
            print(f"  {n['name']}({ins}) -> ({outs})  {first}")
    for err in reg.load_errors:
        sys.stderr.write(f"warning: {err}\n")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # server.py sits at the repository root, which is not on sys.path when `loom` runs from .venv/bin
    import importlib.util

    from .settings import REPO_ROOT

    spec = importlib.util.spec_from_file_location("loom_server_entry", REPO_ROOT / "server.py")
    assert spec is not None and spec.loader is not None
    server = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(server)
    return server.main(args.server_args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loom", description="Latent Loom: node-based latent diffusion workflows.")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (tracebacks of node errors)")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--models-dir", help="models folder (checkpoints/, loras/, controlnet/, vae/, embeddings/)")
        sp.add_argument("--input-dir", help="folder LoadImage reads from (default: input/)")

    r = sub.add_parser("run", help="run a workflow file (ours or ComfyUI API format)")
    r.add_argument("workflow")
    r.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (VALUE parsed as JSON if it can be)")
    r.add_argument("--out", help="output folder (default: output/)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    r.add_argument("--fast", action="store_true", help="GPU fast mode: compiled, CUDA-graph sampling")
    r.add_argument("--dtype", choices=["auto", "fp16", "bf16", "fp32"], default="auto", help="compute dtype on CUDA (auto = fp16)")
    r.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    common(r)
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a workflow file; exit 0 valid, 2 invalid")
    v.add_argument("workflow")
    v.add_argument("--json", action="store_true")
    common(v)
    v.set_defaults(func=cmd_validate)

    n = sub.add_parser("nodes", help="list the node catalog")
    n.add_argument("--json", action="store_true")
    common(n)
    n.set_defaults(func=cmd_nodes)

    s = sub.add_parser("serve", help="start the server (same as python server.py)", add_help=False)
    s.add_argument("server_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_serve)

    for extra in _extra_commands():
        extra(sub)
    return p


def _extra_commands() -> list:
    """Sub-commands contributed by other modules (submit, eval), each optional."""
    found = []
    for modname in ("engine.client", "nodes.metrics.cli"):
        try:
            mod = __import__(modname, fromlist=["register"])
        except ImportError:
            continue
        found.append(mod.register)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    offline()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:  # every flag after `serve` is server.py's (argparse.REMAINDER drops leading --flags)
        return cmd_serve(argparse.Namespace(server_args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
