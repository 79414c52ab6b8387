"""Rendering the Helm chart for the tests in tests/deploy/: find helm, template, look up kinds."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cfstream"
VALUE_SETS = sorted((CHART / "ci").glob("*.yaml"))


def find_helm() -> str | None:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cfstream"
    candidates = [
        os.environ.get("HELM"),
        str(Path(os.environ.get("CFSTREAM_CACHE_DIR", cache)) / "bin" / "helm"),
        shutil.which("helm"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


HELM = find_helm()
needs_helm = pytest.mark.skipif(
    HELM is None,
    reason="no helm binary: run `bash scripts/install-helm.sh` (builds it into "
    "~/.cache/cfstream/bin) or set HELM=/path/to/helm",
)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120, check=False)


def render(*args: str) -> list[dict[str, Any]]:
    result = helm("template", "t", str(CHART), *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in YAML(typ="safe").load_all(result.stdout) if doc]


class Rendered:
    """One rendering of the chart, with look-ups by kind."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [
            d for d in self.of_kind(kind)
            if component is None
            or d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
        return found[0]

    def workloads(self) -> Iterator[dict[str, Any]]:
        yield from self.of_kind("StatefulSet")
        yield from self.of_kind("Deployment")

    def container_env(self, workload: dict[str, Any]) -> dict[str, Any]:
        """The container's environment: ConfigMap entries, then its own env (which wins)."""
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        env: dict[str, Any] = {}
        for source in container.get("envFrom", []):
            name = source["configMapRef"]["name"]
            (config_map,) = [c for c in self.of_kind("ConfigMap") if c["metadata"]["name"] == name]
            env.update(config_map["data"])
        for entry in container.get("env", []):
            env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
        return env
