"""``python tools/make_shards.py ...``: the same command as the console script (see vitwarm/cli/make_shards.py)."""

import sys

from vitwarm.cli.make_shards import main

if __name__ == "__main__":
    sys.exit(main())
