"""docs/wire-format.md: its examples match the schemas and the code, its partitioning is the
client's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from confluent_kafka import murmur2
from hypothesis import given
from hypothesis import strategies as st
from schema_checks import assert_valid, check_event, processor_accepts, worker_accepts

from cfstream.codec import dumps
from cfstream.wire import (
    EVENT_TYPES,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire-format.md"


def doc_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text("utf-8"), flags=re.S)
    return [json.loads(block) for block in blocks]


def test_doc_examples_match_the_schemas() -> None:
    examples = doc_examples()
    assert len(examples) >= 10
    seen = set()
    for record in examples:
        if "type" in record:
            check_event(record)
            seen.add(record["type"])
        elif record.get("kind") == "execution":
            assert_valid("execution", record)
            assert worker_accepts(dumps(record))
            seen.add("execution")
        else:
            assert_valid("call", record)
            assert processor_accepts(dumps(record))
            seen.add(record.get("kind", "call"))
    assert seen == {"call", "tick", "cancel", "finished", "execution", *EVENT_TYPES}


def java_murmur2(data: bytes) -> int:
    """Kafka's Utils.murmur2, as the doc spells it out."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    rest = data[whole:]
    if rest:
        for i in reversed(range(len(rest))):
            h ^= rest[i] << (8 * i)
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def test_doc_partition_vectors_are_what_murmur2_gives() -> None:
    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| (\d+) \|$", DOC.read_text("utf-8"), flags=re.M)
    assert len(rows) >= 4
    for escaped, partitions, partition in rows:
        key = escaped.replace("\\|", "|")  # a Markdown table escape
        assert murmur2(key.encode(), int(partitions)) == int(partition), key
        assert (java_murmur2(key.encode()) & 0x7FFFFFFF) % int(partitions) == int(partition)


@given(st.binary(max_size=40), st.integers(1, 64))
def test_the_documented_murmur2_is_the_one_the_client_uses(key: bytes, partitions: int) -> None:
    assert (java_murmur2(key) & 0x7FFFFFFF) % partitions == murmur2(key, partitions)
