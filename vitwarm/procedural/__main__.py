"""``python -m vitwarm.procedural {list,show} ...``: the grammar viewer (vitwarm.cli.grammars)."""

import sys

from vitwarm.cli.grammars import main

if __name__ == "__main__":
    sys.exit(main())
