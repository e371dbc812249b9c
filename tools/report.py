"""``python tools/report.py ...``: the same command as the console script (see vitwarm/cli/report.py)."""

import sys

from vitwarm.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
