"""``python -m msnewlesions.cli``."""

import sys

from msnewlesions.cli import main

sys.exit(main())
