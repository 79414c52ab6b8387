"""The scheduling rules, in plain Python: no faust, no Kafka client, so the runtime can change."""
