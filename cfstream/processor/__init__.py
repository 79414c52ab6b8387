"""The stream processor: holds pending calls per key in RocksDB and fires them when due."""
