"""``python -m scorefast ...``: the command line (``scorefast --help``)."""

import sys

from .cli import main

sys.exit(main())
