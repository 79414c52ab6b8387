"""Chaos harness: cfstream under processor, worker and broker failures, reconciled at the end.

``python -m bench.chaos --help``. The tasks the workers run are in :mod:`bench.chaos.tasks`
(kept free of harness imports, so a worker starts fast).
"""
