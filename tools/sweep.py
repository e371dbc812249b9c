"""``python tools/sweep.py ...``: the same command as the console script (see vitwarm/cli/sweep.py)."""

import sys

from vitwarm.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
