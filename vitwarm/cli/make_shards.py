"""Write image data sets as webdataset shards in timm's layout (``<name>-<split>-NNNN.tar`` + ``_info.json``).

    python tools/make_shards.py fmnist --out DIR [--fraction F] [--val-size 5000] [--shard-size N] [--verify]
    python tools/make_shards.py folder SRC --out DIR --name NAME [--split S] [--shard-size N] [--verify]
    python tools/make_shards.py cifar10|cifar100|stl10|food101|tiny_imagenet ROOT --out DIR [--verify]

The last line reads torchvision's on-disk formats (download=False); see vitwarm.data.convert_torchvision for
the ROOT each expects. See docs/data.md for the layout and vitwarm.data.fmnist, .folder and .verify for the
functions behind each command. The same command is installed as ``vitwarm-shards``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from vitwarm.data import FMNIST_SRC, verify_shards, write_fmnist_shards, write_folder_shards
from vitwarm.data.convert_torchvision import READERS, write_torchvision_shards
from vitwarm.data.sources import DataError, check_name, read_info
from vitwarm.errors import ArgumentParser, one_line_errors


def shard_name(value: str) -> str:
    """argparse type of --name and --split: the name becomes part of every shard's file name."""
    try:
        return check_name(value, "shard set or split name")
    except DataError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="output directory (created; must be empty or absent)")
    common.add_argument("--shard-size", type=int, default=1000, help="target samples per shard (default: %(default)s)")
    common.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel")
    common.add_argument("--seed", type=int, default=0, help="seed of the sample order and held-out splits")
    common.add_argument("--verify", action="store_true", help="re-read every shard and check it afterwards")
    common.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")

    fm = sub.add_parser("fmnist", parents=[common], help="Fashion-MNIST from its gzip IDX files")
    fm.add_argument("--src", default=FMNIST_SRC, help="directory of the four IDX .gz files (default: %(default)s)")
    fm.add_argument("--fraction", type=float, default=1.0,
                    help="keep this class-balanced fraction of the train split (default: %(default)s)")
    fm.add_argument("--val-size", type=int, default=5000,
                    help="class-balanced validation split held out of the 60k training images (default: %(default)s)")

    fo = sub.add_parser("folder", parents=[common], help="an ImageFolder tree (train/ + val/ or one tree)")
    fo.add_argument("src", help="tree with train/ and val/ (or validation/) subfolders, or one class tree")
    fo.add_argument("--name", required=True, type=shard_name,
                    help="data set name, the shard file prefix (letters, digits, '_', '-', '.')")
    fo.add_argument("--split", default=None, type=shard_name,
                    help="write SRC as this one split instead of train/ + val/")

    for source in READERS:
        tv = sub.add_parser(source, parents=[common], help=f"{source} from torchvision's on-disk format")
        tv.add_argument("root", help="local root as torchvision expects it (see vitwarm.data.convert_torchvision)")
        tv.add_argument("--name", default=source, type=shard_name,
                        help="data set name, the shard file prefix (default: %(default)s)")

    verify = sub.add_parser("verify", help="check an existing shard directory against its _info.json")
    verify.add_argument("root", help="shard directory")
    verify.add_argument("--workers", type=int, default=1, help="processes reading shards in parallel")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "verify":
        out = args.root
        verify_shards(out, workers=args.workers)
    else:
        if args.command == "fmnist":
            out = write_fmnist_shards(
                args.out, src=args.src, fraction=args.fraction, val_size=args.val_size,
                shard_size=args.shard_size, workers=args.workers, seed=args.seed,
                overwrite=args.overwrite, verify=args.verify)
        elif args.command in READERS:
            out = write_torchvision_shards(
                args.command, args.root, args.out, name=args.name, shard_size=args.shard_size, workers=args.workers,
                seed=args.seed, overwrite=args.overwrite, verify=args.verify)
        else:
            out = write_folder_shards(
                args.src, args.out, name=args.name, split=args.split, shard_size=args.shard_size,
                workers=args.workers, seed=args.seed, overwrite=args.overwrite, verify=args.verify)
    splits = read_info(out)["splits"]
    verb = "verified" if args.command == "verify" or args.verify else "wrote"
    logging.info("%s %s: %s", verb, out, ", ".join(f"{s} {v['num_samples']} samples" for s, v in splits.items()))


if __name__ == "__main__":
    sys.exit(main())
