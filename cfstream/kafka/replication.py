"""How many copies cfstream's topics keep, and how many must have a write before it counts.

    brokers   replication factor   min.insync.replicas
       1              1                    1
       2              2                    1
     >= 3             3                    2

One broker may be lost (or restarted) without stopping writes with ``acks=all``, which every
cfstream producer uses (:mod:`cfstream.kafka.config`). ``CFSTREAM_REPLICATION_FACTOR`` and
``CFSTREAM_MIN_INSYNC_REPLICAS`` override either, checked against the cluster. The local dev
cluster (:mod:`cfstream.dev.properties`) gives its internal topics the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from cfstream.errors import ConfigurationError
from cfstream.settings import Settings

# Three copies: one broker may fail while another is restarted, and two still hold each write.
# More copies cost disk and network on every write for failures a small cluster rarely sees.
MAX_AUTO_FACTOR = 3


def auto_factor(brokers: int) -> int:
    """The replication factor for a cluster of ``brokers``: as many as there are, up to 3."""
    return max(1, min(MAX_AUTO_FACTOR, brokers))


def auto_min_insync(factor: int) -> int:
    """One replica fewer than ``factor`` (at least 1): a write survives one replica down."""
    return max(1, factor - 1)


@dataclass(frozen=True)
class Replication:
    """The replication of new topics, and where each number came from."""

    factor: int
    min_insync: int
    brokers: int
    factor_set: bool = False
    min_insync_set: bool = False

    def describe(self) -> str:
        factor_from = ("CFSTREAM_REPLICATION_FACTOR" if self.factor_set
                       else f"auto: {self.brokers} broker{'s' if self.brokers != 1 else ''}")
        min_from = "CFSTREAM_MIN_INSYNC_REPLICAS" if self.min_insync_set else "auto: factor - 1"
        return (f"replication factor {self.factor} ({factor_from}), "
                f"min.insync.replicas {self.min_insync} ({min_from})")


def choose(settings: Settings, brokers: int) -> Replication:
    """The replication for topics created on a cluster of ``brokers``; ConfigurationError if
    an explicit setting cannot work there."""
    factor = settings.replication_factor or auto_factor(brokers)
    if factor > brokers:
        raise ConfigurationError(
            f"CFSTREAM_REPLICATION_FACTOR is {factor}, but the Kafka cluster at "
            f"{settings.bootstrap_servers} has {brokers} broker{'s' if brokers != 1 else ''}: a "
            f"topic cannot have more replicas than there are brokers. Set it to {brokers} or "
            f"less, or to auto (min({MAX_AUTO_FACTOR}, brokers)), or add brokers (locally: "
            "`cfstream kafka start --nodes 3`)."
        )
    min_insync = settings.min_insync_replicas or auto_min_insync(factor)
    if min_insync > factor:
        raise ConfigurationError(
            f"CFSTREAM_MIN_INSYNC_REPLICAS is {min_insync}, more than the replication factor "
            f"{factor}: no write with acks=all could ever succeed. Set it to {factor} or less, "
            "or to auto (the replication factor - 1)."
        )
    return Replication(factor, min_insync, brokers,
                       factor_set=settings.replication_factor is not None,
                       min_insync_set=settings.min_insync_replicas is not None)
