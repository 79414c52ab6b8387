"""Development helpers: a real single-node Apache Kafka broker started from Maven Central jars."""
