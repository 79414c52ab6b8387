"""Example tasks, used by the demo and the docker-compose setup."""
