"""Placeholders in SaveImage's filename prefix, as ComfyUI users write them.

ComfyUI expands `%date:yyyy-MM-dd%` and `%NodeTitle.widget%` in its browser before queueing, and `%width%`,
`%height%`, `%year%`, `%month%`, `%day%`, `%hour%`, `%minute%`, `%second%` on the server. Our editor, the CLI and
imported ComfyUI editor files send the prefix as written, so all of them are expanded here, at save time.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

_TOKEN = re.compile(r"%([^%]+)%")
_DATE_PARTS = re.compile(r"yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s")  # longest first, as ComfyUI's frontend formats


def _date(fmt: str, now: datetime) -> str:
    values = {"yyyy": f"{now.year:04d}", "yy": f"{now.year % 100:02d}", "MM": f"{now.month:02d}", "M": str(now.month),
              "dd": f"{now.day:02d}", "d": str(now.day), "hh": f"{now.hour:02d}", "h": str(now.hour),
              "mm": f"{now.minute:02d}", "m": str(now.minute), "ss": f"{now.second:02d}", "s": str(now.second)}
    return _DATE_PARTS.sub(lambda m: values[m.group(0)], fmt)


def _widget(workflow: dict | None, node: str, name: str) -> Any:
    """A literal input of the node titled, identified or typed `node` (ComfyUI looks by title, then by type)."""
    nodes = (workflow or {}).get("nodes") or {}
    if not isinstance(nodes, dict):
        return None
    by_title = [n for n in nodes.values() if isinstance(n, dict) and (n.get("ui") or {}).get("title") == node]
    by_id = [nodes[node]] if isinstance(nodes.get(node), dict) else []
    by_type = [n for n in nodes.values() if isinstance(n, dict) and n.get("type") == node]
    for n in by_title + by_id + by_type:
        value = (n.get("inputs") or {}).get(name)
        if value is not None and not (isinstance(value, dict) and "node" in value):
            return value.get("value") if isinstance(value, dict) and set(value) == {"value"} else value
    return None


def expand_prefix(prefix: str, *, width: int, height: int, workflow: dict | None = None,
                  now: datetime | None = None) -> str:
    """`prefix` with its %...% placeholders filled in; unknown ones are left as written."""
    if "%" not in prefix:
        return prefix
    now = now or datetime.now()
    simple = {"width": str(width), "height": str(height), "year": f"{now.year:04d}", "month": f"{now.month:02d}",
              "day": f"{now.day:02d}", "hour": f"{now.hour:02d}", "minute": f"{now.minute:02d}",
              "second": f"{now.second:02d}"}

    def fill(m: re.Match) -> str:
        token = m.group(1)
        if token in simple:
            return simple[token]
        if token.startswith("date:"):
            return _date(token[5:], now)
        if "." in token:
            node, _, name = token.rpartition(".")
            value = _widget(workflow, node, name)
            if value is not None:
                return str(value)
        return m.group(0)

    return _TOKEN.sub(fill, prefix)
