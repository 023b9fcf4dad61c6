"""engine/cache.py: signatures (what they depend on, what they ignore) and the byte-bounded LRU."""

import torch

import loomtest_nodes as tn
from engine.cache import OutputCache, estimate_nbytes, signature
from engine.executor import Executor
from engine.graph import validate

wf, ln = tn.wf, tn.ln


def sigs_of(raw, executor):
    graph, errors = validate(raw, executor.registry, executor.settings)
    assert errors == []
    return executor.signatures(graph)


def chain(ids=("c", "d", "s"), value=2, factor_node="Double"):
    c, d, s = ids
    return wf({
        c: {"type": "Const", "inputs": {"value": value}},
        d: {"type": factor_node, "inputs": {"x": ln(c, "value")}},
        s: {"type": "Show", "inputs": {"value": ln(d, "value")}},
    })


def test_signature_independent_of_node_ids(executor):
    a = sigs_of(chain(("c", "d", "s")), executor)
    b = sigs_of(chain(("x1", "x2", "x3")), executor)
    assert [a[k] for k in ("c", "d", "s")] == [b[k] for k in ("x1", "x2", "x3")]


def test_signature_ignores_ui_and_default_spelling(executor):
    a = sigs_of(chain(), executor)
    raw = chain()
    raw["nodes"]["c"]["ui"] = {"pos": [1, 2], "title": "hello"}
    raw["ui"] = {"zoom": 3}
    assert sigs_of(raw, executor) == a
    # an input left to its default and the same value written out are the same work
    explicit = wf({"p": {"type": "Pick", "inputs": {"mode": "a", "flag": False, "ratio": 0.5}}, **{"s": {"type": "Show", "inputs": {"value": ln("p", "value")}}}})
    implicit = wf({"p": {"type": "Pick"}, "s": {"type": "Show", "inputs": {"value": ln("p", "value")}}})
    assert sigs_of(explicit, executor) == sigs_of(implicit, executor)


def test_signature_changes_with_any_literal_and_with_upstream(executor):
    a = sigs_of(chain(value=2), executor)
    b = sigs_of(chain(value=3), executor)
    assert all(a[k] != b[k] for k in ("c", "d", "s"))  # the change propagates downstream
    c = sigs_of(chain(value=2, factor_node="Half"), executor)
    assert a["c"] == c["c"] and a["d"] != c["d"] and a["s"] != c["s"]
    # which output of the upstream is read matters too
    lo = sigs_of(wf({"x": {"type": "Split", "inputs": {"x": 1}}, "s": {"type": "Show", "inputs": {"value": ln("x", "low")}}}), executor)
    hi = sigs_of(wf({"x": {"type": "Split", "inputs": {"x": 1}}, "s": {"type": "Show", "inputs": {"value": ln("x", "high")}}}), executor)
    assert lo["x"] == hi["x"] and lo["s"] != hi["s"]


def test_signature_distinguishes_literal_types(executor):
    def show_lit(v):
        return sigs_of(wf({"s": {"type": "Show", "inputs": {"value": v}}}), executor)["s"]

    values = [1, 1.0, True, "1", [1], {"value": {"a": 1}}, None, "true", 0, False, ""]
    assert len({show_lit(v) for v in values}) == len(values)


def test_signature_changes_with_fingerprint(executor, tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("one")
    raw = wf({"r": {"type": "ReadFile", "inputs": {"path": str(f)}}, "s": {"type": "Show", "inputs": {"value": ln("r", "value")}}})
    first = sigs_of(raw, executor)
    assert sigs_of(raw, executor) == first
    f.write_text("three")  # new size (and mtime): outside state changed
    second = sigs_of(raw, executor)
    assert second["r"] != first["r"] and second["s"] != first["s"]


def test_signature_function_properties():
    base = signature("T", {"a": 1}, {"x": "s1:out"})
    assert signature("T", {"a": 1}, {"x": "s1:out"}) == base
    assert signature("U", {"a": 1}, {"x": "s1:out"}) != base
    assert signature("T", {"a": 2}, {"x": "s1:out"}) != base
    assert signature("T", {"a": 1}, {"y": "s1:out"}) != base
    assert signature("T", {"a": 1}, {"x": "s2:out"}) != base
    assert signature("T", {"a": 1}, {"x": "s1:out"}, "fp") != base
    assert signature("T", {"b": 1, "a": 2}, {}) == signature("T", {"a": 2, "b": 1}, {})  # key order does not matter
    assert len(base) == 32  # fixed size whatever the depth


# --- LRU -------------------------------------------------------------------------------------------------
def test_tensor_storage_is_counted_once_for_views():
    t = torch.zeros(1000, dtype=torch.float32)  # 4000 bytes
    assert estimate_nbytes(t) == 4000
    views = {"a": t, "b": t[:10], "c": t.view(10, 100), "d": t[500:]}
    assert 4000 <= estimate_nbytes(views) < 4000 + 200
    two = {"a": t, "b": torch.zeros(1000)}
    assert estimate_nbytes(two) >= 8000


def test_nbytes_of_cyclic_and_nested_objects():
    class Handle:
        def __init__(self):
            self.weights = torch.zeros(256)
            self.me = self

    h = Handle()
    n = estimate_nbytes({"h": h})
    assert 1024 <= n < 1024 + 400
    nested: list = []
    cur = nested
    for _ in range(5000):  # deep data must not hit the recursion limit
        nxt: list = []
        cur.append(nxt)
        cur = nxt
    assert estimate_nbytes(nested) > 0


def test_lru_evicts_least_recently_used_by_bytes():
    cache = OutputCache(max_bytes=10_000)
    for k in "abc":
        assert cache.put(k, {"v": torch.zeros(1000)})  # ~4 KB each
    assert "a" not in cache and "b" in cache and "c" in cache  # 12 KB > 10 KB: a went
    assert cache.nbytes <= 10_000
    cache.get("b")  # b becomes the most recent
    cache.put("d", {"v": torch.zeros(1000)})
    assert "c" not in cache and "b" in cache and "d" in cache
    assert len(cache) == 2


def test_views_of_one_storage_take_one_slot():
    cache = OutputCache(max_bytes=10_000)
    big = torch.zeros(2000)  # 8 KB
    assert cache.put("views", {"a": big, "b": big[:100], "c": big[1000:]})
    assert 8000 <= cache.nbytes < 9000


def test_entry_larger_than_the_limit_is_not_kept():
    cache = OutputCache(max_bytes=1000)
    assert cache.put("small", {"v": 1})
    assert not cache.put("huge", {"v": torch.zeros(1000)})
    assert "huge" not in cache and "small" in cache
    # replacing an entry by a too-large value drops the old one too
    assert not cache.put("small", {"v": torch.zeros(1000)})
    assert "small" not in cache and cache.nbytes == 0


def test_peek_does_not_touch_recency_or_counters():
    cache = OutputCache(max_bytes=10_000)
    cache.put("a", {"v": torch.zeros(1000)})
    cache.put("b", {"v": torch.zeros(1000)})
    assert cache.peek("a")["v"].shape == (1000,)
    assert cache.hits == 0 and cache.misses == 0
    cache.put("c", {"v": torch.zeros(1000)})
    assert "a" not in cache  # peek did not make "a" recent
    assert cache.peek("zzz") is None and cache.misses == 0
    assert cache.get("zzz") is None and cache.misses == 1
    assert cache.get("b") is not None and cache.hits == 1


def test_clear():
    cache = OutputCache()
    cache.put("a", {"v": 1})
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_executor_respects_cache_size(reg, settings):
    settings.cache_bytes = 1
    ex = Executor(reg, settings)
    assert ex.cache.max_bytes == 1
    raw = wf({"c": {"type": "Const", "inputs": {"value": 1}}, "s": {"type": "Show", "inputs": {"value": ln("c", "value")}}})
    assert ex.run(raw).status == "success"
    assert ex.run(raw).status == "success"
    assert tn.CALLS["Const"] == 2  # nothing fits: nothing is cached, everything re-runs


def test_signature_of_lone_surrogates_from_json(executor):
    import json

    raw = json.loads('{"format": "latentloom.workflow", "version": 1, "nodes": {"s": {"type": "Show", "inputs": {"value": {"value": ["\\ud800", {"k": "\\udfff"}]}}}, "t": {"type": "Text", "inputs": {"text": "\\ud83d"}}, "u": {"type": "Show", "inputs": {"value": {"node": "t", "output": "value"}}}}}')
    r = executor.run(raw)
    assert r.status == "success", r.error
    assert len(set(r.signatures.values())) == 3
