"""``import cfstream as cf`` exposes exactly what ``__all__`` lists (as httpx checks its own)."""

from __future__ import annotations

import types

import cfstream


def test_all_lists_every_public_name() -> None:
    public = sorted(
        name for name in dir(cfstream)
        if not name.startswith("_") and not isinstance(getattr(cfstream, name), types.ModuleType)
    )
    assert cfstream.__all__ == public


def test_every_exported_name_resolves() -> None:
    for name in cfstream.__all__:
        assert getattr(cfstream, name) is not None
    assert len(set(cfstream.__all__)) == len(cfstream.__all__)
