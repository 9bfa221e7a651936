"""What runs inside a worker process: the one training loop (``loop``), the one timing harness (``timing``),
parity's worker half (``parity``) and the command server that the scheduler talks to (``server``). Nothing here
knows about other workers, files of results or reports.
"""
