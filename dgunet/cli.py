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
    "tune-head": ("dgunet.head_tuning", "fit a trained known-operator model's output head, its stages frozen"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command name; only `command`'s module is imported, to add its arguments."""
    parser = argparse.ArgumentParser(prog="python -m dgunet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        if name == command:
            importlib.import_module(module_name).add_arguments(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The command is the first word that is no option; its module then declares its arguments.
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
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
