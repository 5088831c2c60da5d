"""What every hpo command-line tool shares: a parser whose errors are one line, the
``type=`` helpers that check a value's range up front (hpo.limits), the --store and
--broker options (each with its -file twin, resolved by hpo.settings), and opening the
store; and ``loading_modules``, what a command does while its modules load.

Importing this module costs only hpo's light modules: a command's parser is built, and
its arguments checked, before the heavy ones (SQLAlchemy, Celery) load."""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

from hpo import defaults, limits, settings
from hpo.errors import ConfigError, HpoError, TaskNotFound

if TYPE_CHECKING:
    from hpo.store import Store


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


def _id(kind: str, lister: str) -> Callable[[str], object]:
    """An id or a prefix of one, as typed: hex digits, at most a whole id. Whether it is
    long enough, unique and known is the store's to say (``Store.resolve_task_id``),
    naming the same command that lists the ids of this ``kind``."""

    def check(text: str) -> str:
        cleaned = text.strip().lower()
        if re.fullmatch(f"[0-9a-f]{{1,{defaults.TASK_ID_LEN}}}", cleaned):
            return cleaned
        raise TaskNotFound(
            f"{limits.short(text)} is not {kind} id: an id is {defaults.TASK_ID_LEN} hex "
            f"digits, or a unique prefix of at least {defaults.MIN_TASK_ID_PREFIX} of them; "
            f"{lister} shows them")

    return _arg_type(check, "id")


task_id = _id("a task", "`hpo task list`")
optimization_id = _id("an optimization", "`hpo-controller list`")
broker_url = _arg_type(limits.check_broker_url, "URL")


def broker_from(args: argparse.Namespace) -> str:
    """The broker URL (``--broker``, ``--broker-file``, ``$HPO_BROKER_URL``,
    ``$HPO_BROKER_URL_FILE``, else the embedded one: ``settings.UrlSetting.resolve``),
    checked: one of no supported scheme is the same one line wherever it came from,
    naming that place."""
    found = settings.BROKER.resolve(getattr(args, "broker", None),
                                    getattr(args, "broker_file", None))
    if found is None:
        return settings.default_broker_url()
    url, where = found
    try:
        return limits.check_broker_url(url)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def lost_after_s(value: float | None) -> float:
    """``--lost-after`` when given, else ``$HPO_LOST_AFTER_S`` (checked like the flag),
    else ``defaults.LOST_AFTER_S``."""
    return value if value is not None else settings.lost_after_s()


def add_store_option(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--store URL`` and ``--store-file PATH``. Added to the top parser and to each
    sub-command, so that ``hpo --store U task list`` and ``hpo task list --store U`` both
    work."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--store", metavar="URL", default=default,
        help=f"store URL (default: ${defaults.ENV_STORE_URL}, else a SQLite file in "
        "$HPO_HOME); one with a password shows in `ps`: use --store-file")
    parser.add_argument(
        "--store-file", metavar="PATH", default=default,
        help="a file holding the store URL, e.g. a Docker or Kubernetes secret (default: "
        f"${defaults.ENV_STORE_URL_FILE})")


def add_output_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--wide``, on the top parser and each sub-command, like ``--store``."""
    from hpo.cli import output  # rich: only the commands that print tables load it

    parser.add_argument(
        "--wide", action="store_true", default=False if top else argparse.SUPPRESS,
        help=f"tables with every column and whole ids, however wide (default: they fit "
        f"the terminal, or {output.PIPED_WIDTH} columns when piped, leaving out the least "
        "useful columns first)")


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    """``--broker URL`` and ``--broker-file PATH``."""
    parser.add_argument(
        "--broker", metavar="URL", type=broker_url,
        help=f"broker URL (default: ${defaults.ENV_BROKER_URL}, else the embedded one); "
        "one with a password shows in `ps`: use --broker-file")
    parser.add_argument(
        "--broker-file", metavar="PATH",
        help="a file holding the broker URL, e.g. a Docker or Kubernetes secret (default: "
        f"${defaults.ENV_BROKER_URL_FILE})")


def store_url(args: argparse.Namespace) -> str:
    """The store URL of ``--store``, ``--store-file``, the environment or the default."""
    return settings.Settings.load(store_url=getattr(args, "store", None),
                                  store_file=getattr(args, "store_file", None)).store_url


def store_from(args: argparse.Namespace, *, create: bool = False) -> Store:
    """The store the command names. Only the commands that start something create one
    (``create``); every other one refuses a store that does not exist yet, so a typo in
    a path is an error, not an empty store left behind."""
    from hpo.store import open_store

    return open_store(store_url(args), create=create)


@contextlib.contextmanager
def loading_modules() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a command loads its modules, and
    what they made frozen after (``gc.freeze``). Nearly every object an import makes
    lives as long as the process, yet each few hundred of them set off a collection
    that scans them all again: about 15% of a start-up's imports (0.3 s of SQLAlchemy,
    Celery and hpo) found nothing to free. Frozen, they are never scanned again, and
    the pages of a process forked after stay shared with it. Nested: only the outermost
    freezes and turns the collector back on."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def warn_visible_passwords(prog: str, args: argparse.Namespace) -> None:
    """One line on stderr per URL flag that holds a password: it still works, but every
    user of this machine reads a command line (``ps``, /proc)."""
    for setting in (settings.STORE, settings.BROKER):
        url = getattr(args, setting.flag.lstrip("-"), None)
        if url and limits.url_password(url):
            print(f"{prog}: warning: the password in {setting.flag} is visible to other "
                  f"users of this machine (ps): give the URL in ${setting.env} or a file "
                  f"({setting.flag}-file, ${setting.env_file}) instead", file=sys.stderr)


def run_handler(prog: str, args: argparse.Namespace) -> int:
    """Run the chosen sub-command: an HpoError is one line on stderr and exit code 2,
    Ctrl-C exit code 130; never a traceback for either."""
    warn_visible_passwords(prog, args)
    if getattr(args, "wide", False):
        from hpo.cli import output

        output.set_wide(True)
    try:
        return int(args.handler(args) or 0)
    except HpoError as exc:
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading (`| head`): nothing to say
        # Python flushes stdout again at exit: into a pipe with no reader, that fails too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def one_line(text: str) -> str:
    """Messages are one line: a multi-line one (a script's last output) is folded."""
    return " ".join(text.split())
