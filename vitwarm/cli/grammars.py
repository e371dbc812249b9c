"""``vitwarm-grammars`` / ``vitwarm grammars``: a viewer for procedural sequences.

    vitwarm grammars list
    vitwarm grammars show k_dyck --seq-len 32 -n 4 --param k=4
    vitwarm grammars show eca --seq-len 64 --param rule=30

``show`` prints each sample twice: the full sequence (targets) and the model input, where masked
positions appear as ``_``.
"""

from __future__ import annotations

import argparse
import ast
import sys

from vitwarm.errors import ArgumentParser, command_name, one_line_errors
from vitwarm.procedural import GRAMMARS, ProceduralTask

MASK_GLYPH = "_"


def grammar_listing() -> str:
    lines = []
    for name, grammar in GRAMMARS.items():
        params = ", ".join(f"{key}={value!r}" for key, value in grammar.defaults.items())
        lines.append(f"  {name}({params})  vocab {grammar.vocab_size()} at defaults")
        lines.append(f"      {grammar.summary}")
    return "\n".join(lines)


def parse_param(text: str) -> tuple[str, object]:
    """``"k=4"`` -> ("k", 4); values are Python literals (4, 0.3, None), anything else stays a string."""
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"--param wants KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def render(sequence: list[int], glyphs: list[str], row_length: int | None) -> list[str]:
    """Printable lines for one sequence: one line, or one line per grid row when row_length is given."""
    joiner = "" if all(len(glyph) == 1 for glyph in glyphs) else " "
    words = [glyphs[token] for token in sequence]
    step = row_length or len(words)
    return [joiner.join(words[i : i + step]) for i in range(0, len(words), step)]


def show(args: argparse.Namespace) -> None:
    params = dict(args.param)
    task = ProceduralTask(args.grammar, args.seq_len, params, mask_ratio=args.mask_ratio, shuffled=args.shuffled)
    batch = task.batch(0, args.n, args.seed)
    glyphs = [str(i) for i in range(task.mask_id)]
    row_length = None
    if len(task.grammars) == 1:  # glyphs and grid rows are per grammar; a mixture prints plain ids
        grammar, grammar_params = task.grammars[0], task.grammar_params[0]
        glyphs = grammar.glyphs(**grammar_params)
        row_length = grammar.row_length(args.seq_len, **grammar_params)
    glyphs = glyphs + [MASK_GLYPH]  # the mask id comes right after the grammar ids
    print(f"{task!r}\nvocab_size={task.vocab_size} mask_id={task.mask_id} (shown as {MASK_GLYPH!r})")
    for index in range(args.n):
        targets = render(batch["targets"][index].tolist(), glyphs, row_length)
        inputs = render(batch["tokens"][index].tolist(), glyphs, row_length)
        print(f"\nsample {index} ({int(batch['loss_mask'][index].sum())} masked)")
        if row_length is None:
            print(f"  target: {targets[0]}\n  input:  {inputs[0]}")
        else:
            print(f"  {'target':<{len(targets[0])}}   input")
            for target_row, input_row in zip(targets, inputs):
                print(f"  {target_row}   {input_row}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=command_name("python -m vitwarm.cli.grammars"),
        description="Print procedural warm-up sequences and list the registered grammars.",
        epilog="grammars (name(params=defaults)):\n" + grammar_listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list every grammar with its parameters and defaults")
    show_parser = commands.add_parser("show", help="print sample sequences of a grammar or mixture")
    show_parser.add_argument("grammar", help='a grammar name or a mixture such as "k_dyck:3+ww:1"')
    show_parser.add_argument("--seq-len", type=int, default=64, help="tokens per sequence (default 64)")
    show_parser.add_argument("-n", type=int, default=4, help="number of samples (default 4)")
    show_parser.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    show_parser.add_argument("--mask-ratio", type=float, default=0.5, help="fraction of targets masked")
    show_parser.add_argument("--shuffled", action="store_true", help="the shuffled-token control")
    show_parser.add_argument(
        "--param", type=parse_param, action="append", default=[], metavar="KEY=VALUE",
        help="grammar parameter, repeatable (e.g. --param k=4 --param p_open=0.4)",
    )  # fmt: skip
    return parser


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        print(grammar_listing())
        return
    try:
        show(args)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
