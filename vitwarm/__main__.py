"""``python -m vitwarm <verb> ...``: the ``vitwarm`` command (vitwarm.cli.main)."""

import sys

from vitwarm.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
