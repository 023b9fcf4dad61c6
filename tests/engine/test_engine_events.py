"""engine/events.py: every event is a typed model whose JSON form round-trips through the union."""

import json

import pytest
from pydantic import TypeAdapter

from engine import events as ev

ANY_EVENT = TypeAdapter(ev.AnyEvent)

SAMPLES = [
    ev.RunStarted(run_id="r", nodes=["a", "b"]),
    ev.NodesCached(run_id="r", nodes=["a"]),
    ev.NodeStarted(run_id="r", node_id="a", node_type="Const"),
    ev.NodeProgress(run_id="r", node_id="a", value=3, max=10, preview=object()),
    ev.NodeWarning(run_id="r", node_id="a", message="careful"),
    ev.NodeFinished(run_id="r", node_id="a", node_type="Const", seconds=0.25, cached=False, ui={"images": [], "text": []}),
    ev.RunFinished(run_id="r", seconds=1.5),
    ev.RunFailed(run_id="r", node_id="a", node_type="Const", error_type="ValueError", message="bad"),
    ev.RunInterrupted(run_id="r", node_id="a", node_type="Const"),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.type)
def test_event_round_trips_through_the_union(event):
    data = json.loads(event.model_dump_json())
    assert data["type"] == event.type and data["run_id"] == "r"
    back = ANY_EVENT.validate_python(data)
    assert type(back) is type(event)
    assert back.model_dump() == event.model_dump()


def test_types_are_unique_and_all_in_the_union():
    types = [e.type for e in SAMPLES]
    assert len(set(types)) == len(types) == len(ev.AnyEvent.__args__)


def test_progress_preview_is_not_serialised():
    e = SAMPLES[3]
    assert "preview" not in json.loads(e.model_dump_json())
    assert e.preview is not None


def test_run_failed_carries_validation_errors():
    e = ev.RunFailed(run_id="r", node_id=None, node_type=None, error_type="InvalidWorkflow", message="m",
                     errors=[{"node_id": "a", "input": "x", "code": "missing_input", "message": "m"}])
    assert ANY_EVENT.validate_json(e.model_dump_json()).errors[0]["code"] == "missing_input"
