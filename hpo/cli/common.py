"""What every hpo command-line tool shares: the --store option and opening the store."""

from __future__ import annotations

import argparse

from hpo.store import Store, open_store


def add_store_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--store URL``. Added to the top parser and to each sub-command, so that
    ``hpo --store U task list`` and ``hpo task list --store U`` both work."""
    parser.add_argument(
        "--store", metavar="URL", default=None if top else argparse.SUPPRESS,
        help="store URL (default: $HPO_STORE_URL, else a SQLite file in $HPO_HOME)")


def store_from(args: argparse.Namespace) -> Store:
    return open_store(getattr(args, "store", None))
