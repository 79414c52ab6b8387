"""Fixtures for the robustness tests: the pipeline tests' harness and ``pipeline_factory``.

tests/pipeline/conftest.py is loaded here under a name of its own (every conftest.py outside a
package is imported as ``conftest``, so a plain import would find whichever was loaded last).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

PIPELINE_DIR = Path(__file__).resolve().parent.parent / "pipeline"
if str(PIPELINE_DIR) not in sys.path:
    sys.path.insert(0, str(PIPELINE_DIR))  # harness, pipeline_tasks


def _load_pipeline_conftest() -> types.ModuleType:
    name = "cfstream_tests_pipeline_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PIPELINE_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pipeline_factory = _load_pipeline_conftest().pipeline_factory
