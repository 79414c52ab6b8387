"""Benchmarks of cfstream beside raw Kafka: ``python -m bench --help``, see bench/README.md."""
