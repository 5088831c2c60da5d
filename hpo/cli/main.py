"""``hpo``: look at and manage tasks in the store.

Every error hpo raises on purpose is printed as one line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hpo.cli import task_cmd, ui_cmd, workers_cmd
from hpo.cli.common import Parser, add_output_options, add_store_option, run_handler


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hpo",
        description="Manage hpo tasks: templates registered from training scripts, their "
        "clones, parameters, scalars and logs.",
        epilog="Data lives in HPO_STORE_URL (default: a SQLite file in HPO_HOME, ~/.hpo).",
    )
    add_store_option(parser, top=True)
    add_output_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    task_cmd.register(commands)
    workers_cmd.register(commands)
    ui_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_handler("hpo", build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
