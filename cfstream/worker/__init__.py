"""Workers: run the executions the processor emits and report what happened."""
