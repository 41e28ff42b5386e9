"""``python -m falcon_core``: the command line (see ``falcon_core.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
