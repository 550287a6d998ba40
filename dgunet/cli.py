"""`python -m dgunet <command>`: one entry point, each command in its own module.

A command module defines `add_arguments(parser)` and `run(args) -> int`. Modules are
imported only when their command runs, so `dgunet info` does not pay for OpenCV.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dgunet.errors import DGUNetError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("dgunet.data.check", "check that a data set folder has the expected layout"),
    "evaluate": ("dgunet.evaluate", "score a folder of results against ground truth"),
    "reproduce": ("dgunet.reproduce", "test + evaluate a task and compare with the paper"),
    "info": ("dgunet.info", "parameters and FLOPs of a variant"),
    "bench": ("dgunet.bench", "time the faithful and the fast inference paths"),
    "demo": ("dgunet.demo", "train and test a small DGUNet on built-in photos"),
    "restore": ("dgunet.restore_command", "restore your own images (known kernel, SR, denoising, or blind)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dgunet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        # Arguments are added lazily below, only for the command being run.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # First pass: find the command, then let its module declare its arguments.
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in COMMANDS:
        module = importlib.import_module(COMMANDS[name][0])
        module.add_arguments(parser._subparsers._group_actions[0].choices[name])
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except DGUNetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
