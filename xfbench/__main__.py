"""``python -m xfbench``: the same as the ``xfbench`` command."""

import sys

from xfbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
