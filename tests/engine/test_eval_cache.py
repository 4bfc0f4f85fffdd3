"""FP32 evaluations remembered across cells: the same numbers back, keyed by everything they depend on, recomputed
when the entry is missing or unreadable."""

from __future__ import annotations

import torch
from torch import nn

from bench.engine import eval_cache
from bench.engine.eval_cache import eval_key, evaluate_cached


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    loader = [(torch.randn(8, 1, 4, 4), torch.randint(0, 10, (8,))) for _ in range(3)]
    return model, loader


def test_the_second_call_reads_the_first_ones_numbers(tmp_path, monkeypatch):
    model, loader = _setup()
    calls = []
    real = eval_cache.evaluate
    monkeypatch.setattr(eval_cache, "evaluate", lambda *a: calls.append(1) or real(*a))
    ctx = {"arch": "x", "data": "fp"}
    first = evaluate_cached(model, loader, None, weights_sha256="abc", context=ctx, cache_dir=tmp_path)
    second = evaluate_cached(model, loader, None, weights_sha256="abc", context=ctx, cache_dir=tmp_path)
    assert len(calls) == 1 and second.pop("cached") is True and "cached" not in first
    assert second == first and first["n"] == 24
    # other weights, data or batch limit: another entry
    evaluate_cached(model, loader, None, weights_sha256="abd", context=ctx, cache_dir=tmp_path)
    evaluate_cached(model, loader, None, weights_sha256="abc", context={**ctx, "data": "other"}, cache_dir=tmp_path)
    evaluate_cached(model, loader, 1, weights_sha256="abc", context=ctx, cache_dir=tmp_path)
    assert len(calls) == 4 and len(list(tmp_path.iterdir())) == 4


def test_an_unreadable_entry_is_computed_again_and_no_sha_is_never_cached(tmp_path):
    model, loader = _setup()
    ctx = {"arch": "x"}
    want = evaluate_cached(model, loader, None, weights_sha256="abc", context=ctx, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_text("{not json")
    again = evaluate_cached(model, loader, None, weights_sha256="abc", context=ctx, cache_dir=tmp_path)
    assert "cached" not in again and again == want
    evaluate_cached(model, loader, None, weights_sha256=None, context=ctx, cache_dir=tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_the_key_holds_threads_device_and_machine():
    base = eval_key("abc", {"arch": "x"}, "cpu")
    assert base == eval_key("abc", {"arch": "x"}, "cpu") and base != eval_key("abc", {"arch": "x"}, "cuda")
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(n + 1)
        assert eval_key("abc", {"arch": "x"}, "cpu") != base
    finally:
        torch.set_num_threads(n)
    assert eval_cache.machine()
