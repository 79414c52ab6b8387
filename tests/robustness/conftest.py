"""Fixtures for the robustness tests: the pipeline tests' harness and ``pipeline_factory``."""

from __future__ import annotations

import sys
from pathlib import Path

PIPELINE_DIR = Path(__file__).resolve().parent.parent / "pipeline"
if str(PIPELINE_DIR) not in sys.path:
    sys.path.insert(0, str(PIPELINE_DIR))  # harness, pipeline_tasks

from harness import pipeline_conftest  # noqa: E402

pipeline_factory = pipeline_conftest().pipeline_factory
