"""The worker's entry point, which never moves: ``python -m xfbench.compare.worker JOB COMMAND_FD EVENT_FD``.

``xfbench ab`` starts workers of other environments, whose xfbench may be older or newer, by this module name, and
probes :data:`JOB_VERSIONS` here to learn which job formats they read (``compare.platforms.job``). The worker itself
is ``compare.engine.server``.
"""

from __future__ import annotations

import sys

from xfbench.compare.platforms.job import JOB_VERSIONS

__all__ = ["JOB_VERSIONS"]

if __name__ == "__main__":
    from xfbench.compare.engine.server import leave, main

    leave(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
