"""``python -m prunestudio.tui [STORE]``: the same parser and handler as ``prunestudio tui``."""

import sys

from prunestudio.commands.tui import main

sys.exit(main())
