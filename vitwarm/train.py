"""Entry point of one run: ``accelerate launch [flags] -m vitwarm.train --config RECIPE.yaml [key=value ...]``.

The command line is vitwarm.cli.train; the run itself is vitwarm.run (the loop: vitwarm.run.engine).
"""

import sys

from vitwarm.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
