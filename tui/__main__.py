"""``python -m prunestudio.tui [STORE]``."""

import sys

from .cli import main

sys.exit(main())
