"""``hpo``: look at and manage tasks in the store.

Every error hpo raises on purpose is printed as one line and exits with 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hpo.cli import task_cmd, workers_cmd
from hpo.cli.common import add_store_option
from hpo.errors import HpoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hpo",
        description="Manage hpo tasks: templates registered from training scripts, their "
        "clones, parameters, scalars and logs.",
        epilog="Data lives in HPO_STORE_URL (default: a SQLite file in HPO_HOME, ~/.hpo).",
    )
    add_store_option(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    task_cmd.register(commands)
    workers_cmd.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except HpoError as exc:
        print(f"hpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hpo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
