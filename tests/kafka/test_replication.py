"""The replication cfstream gives the topics it creates: chosen from the cluster's size unless
set, and refused with what to do when it cannot work there."""

from __future__ import annotations

import pytest

from cfstream.errors import ConfigurationError
from cfstream.kafka import replication
from cfstream.settings import Settings


@pytest.mark.parametrize(("brokers", "factor", "min_insync"), [
    (1, 1, 1), (2, 2, 1), (3, 3, 2), (5, 3, 2),
])
def test_auto_follows_the_cluster_size(brokers: int, factor: int, min_insync: int) -> None:
    chosen = replication.choose(Settings(), brokers)
    assert (chosen.factor, chosen.min_insync) == (factor, min_insync)
    assert chosen.describe() == (
        f"replication factor {factor} (auto: {brokers} broker{'s' if brokers > 1 else ''}), "
        f"min.insync.replicas {min_insync} (auto: factor - 1)")


def test_explicit_settings_win() -> None:
    chosen = replication.choose(Settings(replication_factor=2), 5)
    assert (chosen.factor, chosen.min_insync) == (2, 1)
    assert "(CFSTREAM_REPLICATION_FACTOR)" in chosen.describe()
    chosen = replication.choose(Settings(min_insync_replicas=3), 3)
    assert (chosen.factor, chosen.min_insync) == (3, 3)
    assert "(CFSTREAM_MIN_INSYNC_REPLICAS)" in chosen.describe()


def test_more_replicas_than_brokers_is_refused_with_what_to_do() -> None:
    settings = Settings(bootstrap_servers="b:9092", replication_factor=3)
    with pytest.raises(ConfigurationError) as info:
        replication.choose(settings, 1)
    message = str(info.value)
    assert "CFSTREAM_REPLICATION_FACTOR is 3" in message and "b:9092 has 1 broker:" in message
    assert "Set it to 1 or less, or to auto" in message
    assert "cfstream kafka start --nodes 3" in message


def test_min_insync_above_the_factor_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="CFSTREAM_MIN_INSYNC_REPLICAS is 2, more than "
                                                 "the replication factor 1") as info:
        replication.choose(Settings(min_insync_replicas=2), 1)
    assert "acks=all" in str(info.value)
