"""Reading what happened to executions: the events topic."""
