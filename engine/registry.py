"""The node registry: which node types exist, found by importing node modules (no global mutable state).

`Registry.default()` imports every module of the `nodes` package; custom node folders are opt-in
(`--custom-nodes DIR`). Tests build small registries from plain lists of declared functions.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from .node import NodeDeclarationError, NodeDef, NodeSchema
from .types import export_types

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, defs: Iterable[NodeDef | Callable] = ()) -> None:
        self._defs: dict[str, NodeDef] = {}
        self._aliases: dict[str, str] = {}
        self.load_errors: list[str] = []
        for d in defs:
            self.add(d)

    def add(self, item: NodeDef | Callable) -> NodeDef:
        d = item if isinstance(item, NodeDef) else getattr(item, "__loom_node__", None)
        if d is None:
            raise NodeDeclarationError(f"{item!r} is not a declared node (use @node)")
        for n in (d.name, *d.aliases):
            owner = self._defs.get(n) or (self._defs.get(self._aliases[n]) if n in self._aliases else None)
            if owner is not None and owner.func is not d.func:
                raise NodeDeclarationError(f"node type {n!r} is declared twice ({owner.module} and {d.module})")
        self._defs[d.name] = d
        for a in d.aliases:
            self._aliases[a] = d.name
        return d

    def add_module(self, module: Any) -> int:
        """Register the nodes a module declares: all of them, or (on a clash) none."""
        defs, aliases = dict(self._defs), dict(self._aliases)
        count = 0
        try:
            for value in vars(module).values():
                d = getattr(value, "__loom_node__", None)
                if isinstance(d, NodeDef) and d.module == module.__name__:
                    self.add(d)
                    count += 1
        except NodeDeclarationError:
            self._defs, self._aliases = defs, aliases
            raise
        return count

    def load_package(self, package: str = "nodes") -> None:
        """Import the node-family modules of a package (`nodes/*.py`) and register their nodes.

        Sub-packages (`nodes/sd/`, `nodes/metrics/`) hold the heavy helpers and are imported by the
        families that need them, lazily, so listing or validating stays fast.
        """
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
            if info.ispkg:
                continue
            try:
                mod = importlib.import_module(info.name)
            except NodeDeclarationError:
                raise
            except Exception as exc:  # an optional dependency missing must not hide every other node
                msg = f"could not import {info.name}: {type(exc).__name__}: {exc}"
                log.warning(msg)
                self.load_errors.append(msg)
                continue
            self.add_module(mod)

    def load_folder(self, folder: Path) -> None:
        """Opt-in custom nodes: each .py file (or package) in `folder` is imported and registered.

        A module that fails to import or declares a clashing node is reported in `load_errors`; the
        others still load.
        """
        try:
            paths = sorted(Path(folder).iterdir())
        except OSError as exc:
            self.load_errors.append(f"custom node folder {folder}: {type(exc).__name__}: {exc}")
            return
        for path in paths:
            target = path / "__init__.py" if path.is_dir() else path
            if not target.exists() or target.suffix != ".py" or path.name.startswith(("_", ".")):
                continue
            name = f"loom_custom_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, target)
            if spec is None or spec.loader is None:
                continue
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
                self.add_module(mod)
            except Exception as exc:
                sys.modules.pop(name, None)
                self.load_errors.append(f"custom node {path}: {type(exc).__name__}: {exc}")
                continue

    @classmethod
    def default(cls) -> "Registry":
        reg = cls()
        reg.load_package("nodes")
        return reg

    def get(self, name: str) -> NodeDef | None:
        d = self._defs.get(name)
        if d is None and name in self._aliases:
            d = self._defs[self._aliases[name]]
        return d

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def names(self) -> list[str]:
        return sorted(self._defs)

    def __iter__(self):
        return iter(self._defs.values())

    def catalog(self, settings: Any = None) -> list[NodeSchema]:
        return [self._defs[n].schema(settings) for n in self.names()]

    def catalog_json(self, settings: Any = None) -> dict:
        """The document `loom nodes --json`, the API and the editor's palette share."""
        return {
            "types": export_types(),
            "nodes": {s.name: s.model_dump() for s in self.catalog(settings)},
        }
