"""The quick benchmark run, part "rolling" (:data:`quick_run.PARTS`): every benchmark in it
runs to the end and reports every row."""

from __future__ import annotations

from pathlib import Path

import pytest
from quick_run import run_quick

pytestmark = [pytest.mark.kafka, pytest.mark.long]


@pytest.mark.timeout(600)
def test_quick_benchmarks_run_and_report_every_figure(kafka_bootstrap: str,
                                                      tmp_path: Path) -> None:
    run_quick(kafka_bootstrap, tmp_path, "rolling", timeout=540)
