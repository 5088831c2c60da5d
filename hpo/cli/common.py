"""What every hpo command-line tool shares: a parser whose errors are one line, the
``type=`` helpers that check a value's range up front (hpo.limits), the --store option
and opening the store."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from hpo import defaults, limits, settings
from hpo.errors import ConfigError, HpoError
from hpo.store import Store, open_store


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2 (argparse
    prints the whole usage first); ``--help`` still shows it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def _arg_type(check: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse ``type=``: an HpoError from ``check`` becomes argparse's error
    (one line: "argument --flag: ...")."""

    def convert(text: str) -> object:
        try:
            return check(text)
        except HpoError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def number(low: float, high: float, *, integer: bool = False, above: bool = False,
           unit: str = "") -> Callable[[str], object]:
    """A number from ``low`` (exclusive with ``above``) to ``high``: NaN, infinities and
    text are refused with the range stated."""
    return _arg_type(lambda text: limits.parse_number(
        "", text, low, high, integer=integer, above=above, unit=unit),
        "integer" if integer else "number")


#: The common ranges, by what a flag means.
positive_int = number(1, defaults.MAX_COUNT, integer=True)
non_negative_int = number(0, defaults.MAX_COUNT, integer=True)
slots = number(1, defaults.MAX_SLOTS, integer=True)
seconds = number(0, defaults.MAX_SECONDS, unit="seconds")  # 0: at once
positive_seconds = number(0, defaults.MAX_SECONDS, above=True, unit="seconds")
period = number(defaults.MIN_PERIOD_S, defaults.MAX_SECONDS, unit="seconds")
port = number(0, defaults.MAX_PORT, integer=True)


def name(kind: str) -> Callable[[str], object]:
    """A name of ``kind`` (hpo.limits.NAMES): printable, as long as the store holds."""
    return _arg_type(lambda text: limits.check_name(kind, text, "the " + kind), "name")


task_id = _arg_type(limits.check_task_id, "id")
broker_url = _arg_type(limits.check_broker_url, "URL")


def broker_from(args: argparse.Namespace) -> str | None:
    """``--broker`` (checked by its type), else None for ``$HPO_BROKER_URL`` or the
    embedded broker; a ``$HPO_BROKER_URL`` of no supported scheme is checked here, so it
    is the same one line as a bad ``--broker``."""
    url: str | None = getattr(args, "broker", None)
    env = os.environ.get(defaults.ENV_BROKER_URL)
    if url is None and env:
        try:
            limits.check_broker_url(env)
        except ConfigError as exc:
            raise ConfigError(f"${defaults.ENV_BROKER_URL}: {exc}") from None
    return url


def lost_after_s(value: float | None) -> float:
    """``--lost-after`` when given, else ``$HPO_LOST_AFTER_S`` (checked like the flag),
    else ``defaults.LOST_AFTER_S``."""
    return value if value is not None else settings.lost_after_s()


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
