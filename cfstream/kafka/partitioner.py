"""Where a keyed record lands: murmur2, as Java clients and librdkafka's ``murmur2_random`` place
keys, so a reader can tell which partition holds an execution's events without reading them."""

from __future__ import annotations

from cfstream.settings import Settings

# librdkafka partitioners that place a non-empty key by murmur2 (``murmur2`` and the default we
# set, ``murmur2_random``, differ only for records without a key).
MURMUR2_PARTITIONERS = frozenset({"murmur2", "murmur2_random"})
_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``), unsigned."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a producer using murmur2 puts ``key`` in, of ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def places_keys_by_murmur2(settings: Settings) -> bool:
    """Whether cfstream's producers, with these settings, place keys by murmur2 (the default;
    ``CFSTREAM_KAFKA_CONFIG`` may choose another partitioner)."""
    chosen = settings.librdkafka_config().get("partitioner", "murmur2_random")
    return chosen in MURMUR2_PARTITIONERS
