"""Comparing backends: from a request to a result, in rooms with one job each (arrows point down this list).

- ``results/``: the typed result model, its schema and migrations, atomic files and the journal, the store.
- ``stats/``: pure functions over results: ratios and intervals, quality and seed spread, the CI gate's
  statistics and verdicts, change points, parity's judgement.
- ``platforms/``: where workers run: the channel, the job format, local processes, Ray.
- ``engine/``: what runs inside a worker: the training loop, the timing harness, the command server.
- On top, orchestration: ``protocol`` (timing settings), ``plan``, ``sweep`` and ``arms`` (the requests of a run, a
  sweep and an ab comparison), ``schedule`` (rounds of turns), ``workers`` and ``cells`` (the scheduler's operations
  on workers, cells from their messages), ``runner`` (``xfbench run``), ``ab`` (``xfbench ab``), ``session`` (a
  whole run, resume, parity), ``executors`` (where cells run), ``worker`` (the worker's stable entry point).

docs/architecture.md draws the layers; tests/test_architecture.py enforces them.
"""
