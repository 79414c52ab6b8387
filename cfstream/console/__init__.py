"""``cfstream console``: a web page showing what the pipeline does, live, read from Kafka."""
