"""Every benchmark runs (tiny sizes) and returns well-formed results; the harness is sound."""

import math

import pytest

from benchmarks.harness import Result, compare, ratio_stats
from benchmarks.run import discover, write_markdown

BENCHES = discover()


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_benchmark_runs_quickly(name):
    results = BENCHES[name].run(quick=True)
    assert results, f"benchmark {name} returned nothing"
    for r in results:
        assert isinstance(r, Result)
        assert r.benchmark == name
        assert math.isfinite(r.value)


def test_harness_interleaves_and_reports_ratio():
    calls = []
    median, iqr, a, b = compare(lambda: calls.append("a"), lambda: calls.append("b"), rounds=4, warmup=0, repeat=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]  # A B, B A, ...: same noise for both
    assert len(a) == len(b) == 4
    assert median > 0 and iqr >= 0


def test_ratio_stats():
    assert ratio_stats([2.0]) == (2.0, 0.0)
    median, iqr = ratio_stats([1.0, 2.0, 3.0, 4.0, 5.0])
    assert median == 3.0 and iqr == 2.0


def test_markdown_table():
    text = write_markdown({"x": [Result("x", "case", "time ratio", 1.5, 0.1, "≤ 2×", True).as_dict()]}, "test machine")
    assert "| x | case | time ratio | 1.5 (0.1) | ≤ 2× ✓ |" in text
