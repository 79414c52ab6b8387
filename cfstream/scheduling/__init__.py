"""The scheduling rules, in plain Python: no Kafka client, so the runtime around them can change."""
