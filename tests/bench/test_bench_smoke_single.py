"""The quick benchmark run, part "single" (:data:`quick_run.PARTS`): every benchmark in it
runs to the end and reports every row; and the parts together run every benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest
from quick_run import PARTS, run_quick

from bench.cli import BENCHMARKS

pytestmark = [pytest.mark.kafka, pytest.mark.long]


@pytest.mark.timeout(600)
def test_quick_benchmarks_run_and_report_every_figure(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    run_quick(kafka_bootstrap, tmp_path, "single", timeout=540)


def test_the_parts_together_run_every_benchmark_once() -> None:
    names = [name for part in PARTS.values() for name in part]
    assert sorted(names) == sorted(BENCHMARKS)
