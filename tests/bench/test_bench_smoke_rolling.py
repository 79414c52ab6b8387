"""The quick benchmark run, part "rolling" (:data:`quick_run.PARTS`): every benchmark in it
runs to the end and reports every row."""

from quick_run import smoke_test

test_quick_benchmarks_run_and_report_every_figure = smoke_test("rolling")
