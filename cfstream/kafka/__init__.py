"""Thin wrappers around confluent-kafka clients."""
