"""Pages of a list the page shows a part of: a cursor names the last item of a page, so that
the next page starts after it even while newer items arrive."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

Item = TypeVar("Item")
Cursor = tuple[int, str]
# Rows per page, unless the page asks for fewer.
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def parse_cursor(text: str) -> Cursor | None:
    """``"<number>:<text>"`` as the page sends it; None for an empty or malformed one."""
    number, sep, rest = text.partition(":")
    if not sep:
        return None
    try:
        return int(number), rest
    except ValueError:
        return None


def page_size(text: str) -> int:
    try:
        return min(MAX_PAGE_SIZE, max(1, int(text)))
    except ValueError:
        return PAGE_SIZE


def page(items: Iterable[Item], key: Callable[[Item], Cursor], after: Cursor | None,
         limit: int, *, descending: bool) -> dict[str, Any]:
    """One page of ``items`` (already in the order shown): those past ``after``, at most
    ``limit``; ``next`` is the cursor of the page after it (None on the last), ``total`` how
    many items there are in all and ``offset`` how many come before this page."""
    rows: list[Item] = []
    total = offset = 0
    for item in items:
        total += 1
        if after is not None:
            position = key(item)
            if (position >= after) if descending else (position <= after):
                offset += 1
                continue
        if len(rows) < limit:
            rows.append(item)
    more = total - offset > len(rows)
    return {"rows": rows, "total": total, "offset": offset,
            "next": _text(key(rows[-1])) if more and rows else None}


def _text(cursor: Cursor) -> str:
    return f"{cursor[0]}:{cursor[1]}"
