"""The queue's event sink throttles progress events per node, but never drops a status line or the last step."""

from __future__ import annotations

from types import SimpleNamespace

from engine import events as ev
from engine.queue import _EventSink, run_row


class Listener:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def run_event(self, row, data: dict) -> None:
        self.sent.append(data)


def test_status_lines_and_last_step_pass_the_progress_throttle():
    listener = Listener()
    queue = SimpleNamespace(progress_interval=60.0, preview_interval=60.0, preview_size=64, listener=listener)
    sink = _EventSink(queue, run_row("r1", {"nodes": {}}), final=[])
    progress = lambda value, text=None: ev.NodeProgress(run_id="r1", node_id="s", value=value, max=4, text=text)  # noqa: E731
    sink(progress(1))
    sink(progress(1, text="compiling UNet for 64x64 batch 1 (first time, ~70 s)"))
    sink(progress(2))  # within the interval: dropped
    sink(progress(3))  # dropped
    sink(progress(4))  # the last step: kept
    got = [(d["value"], d["text"]) for d in listener.sent]
    assert got == [(1, None), (1, "compiling UNet for 64x64 batch 1 (first time, ~70 s)"), (4, None)]
