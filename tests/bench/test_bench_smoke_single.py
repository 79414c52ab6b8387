"""The quick benchmark run, part "single" (:data:`quick_run.PARTS`): every benchmark in it
runs to the end and reports every row; and the parts together run every benchmark."""

from quick_run import PARTS, smoke_test

from bench.cli import BENCHMARKS

test_quick_benchmarks_run_and_report_every_figure = smoke_test("single")


def test_the_parts_together_run_every_benchmark_once() -> None:
    names = [name for part in PARTS.values() for name in part]
    assert sorted(names) == sorted(BENCHMARKS)
