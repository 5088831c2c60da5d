"""What every hpo command-line tool shares: the --store option and opening the store."""

from __future__ import annotations

import argparse
import sys

from hpo.errors import HpoError
from hpo.store import Store, open_store


def add_store_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--store URL``. Added to the top parser and to each sub-command, so that
    ``hpo --store U task list`` and ``hpo task list --store U`` both work."""
    parser.add_argument(
        "--store", metavar="URL", default=None if top else argparse.SUPPRESS,
        help="store URL (default: $HPO_STORE_URL, else a SQLite file in $HPO_HOME)")


def store_from(args: argparse.Namespace) -> Store:
    return open_store(getattr(args, "store", None))


def run_handler(prog: str, args: argparse.Namespace) -> int:
    """Run the chosen sub-command: an HpoError is one line on stderr and exit code 2,
    Ctrl-C exit code 130; never a traceback for either."""
    try:
        return int(args.handler(args) or 0)
    except HpoError as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def one_line(text: str) -> str:
    """Messages are one line: a multi-line one (a script's last output) is folded."""
    return " ".join(text.split())
