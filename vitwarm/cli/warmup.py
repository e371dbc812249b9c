"""``vitwarm warmup``: a recipe's warm-up phase alone, for a lab that trains on images with its own trainer.

    vitwarm warmup --config RECIPE [key=value ...]
    accelerate launch [accelerate flags] -m vitwarm warmup --config RECIPE [key=value ...]

The run of ``vitwarm train`` with ``warmup.alone=true``: the recipe's warm-up budget and adaptive stop, the
same run directory (resume, lock, polite stop on SIGTERM), ending with the warmed-up backbone in timm's hub
format, headless, in RUN_DIR/warmup/ and a summary.json (probe, FLOPs, why it stopped). The warm-up reads no
image: the image data's size sets its budget (warmup.fraction x budget.epochs x train samples), and its
class names and statistics go into the export; ``data.source=synthetic`` with ``data.synthetic.samples`` set
to the data set's size stands in where the shards are not at hand (docs/use_elsewhere.md).
"""

from __future__ import annotations

import sys

from ..errors import one_line_errors
from .train import parse_args, run_command


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        argv, prog="python -m vitwarm.cli.warmup",
        description="The recipe's procedural warm-up alone: a warmed-up ViT backbone in timm's hub format "
                    "(RUN_DIR/warmup/) to start another trainer from.",
        epilog="Example: vitwarm warmup --config imagenet/vit_base_kdyck data.source=/data/imagenet1k-wds "
               "run.dir=runs/vitb_warmup, then timm's train.py --model local-dir:runs/vitb_warmup/warmup "
               "--pretrained ...")
    run_command(args, forced=("warmup.alone=true",))


if __name__ == "__main__":
    sys.exit(main())
