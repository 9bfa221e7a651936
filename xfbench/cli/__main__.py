"""``python -m xfbench.cli``: the same as the ``xfbench`` command."""

import sys

from xfbench.cli import main

sys.exit(main())
