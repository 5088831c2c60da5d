"""One Optuna worker for ``bench/vs_optuna.py``: a loop of ask -> run the trial -> tell,
``--trials`` times, on a shared study (RandomSampler, the same search space as hpo's).

* ``--mode subprocess``: each trial runs ``python SCRIPT --x1 .. --x2 ..`` (a fresh
  interpreter per trial, like an hpo agent's spawn); the script prints one
  ``REPORT iteration value`` line per report, passed on to ``trial.report`` (stored, as
  hpo stores every report), or with ``--final-only`` only the last one, to ``tell``.
* ``--mode inprocess``: the same work called in this process, reporting through
  ``trial.report``.

Storage: ``--journal PATH`` (a JournalStorage on a file) or ``--rdb URL`` (RDBStorage).
``--setup`` only creates the storage's tables (run untimed before the workers), so the
timed workers find them, as hpo's agents find their store created.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

TRIALS_DIR = Path(__file__).resolve().parent / "trials"
STUDY = "bench"


def make_storage(args: argparse.Namespace) -> Any:
    import optuna

    if args.rdb:
        return optuna.storages.RDBStorage(args.rdb)
    journal = optuna.storages.journal
    # Optuna 4.0 renamed JournalFileStorage to JournalFileBackend.
    backend = getattr(journal, "JournalFileBackend", None) or optuna.storages.JournalFileStorage
    return journal.JournalStorage(backend(args.journal))


def subprocess_trial(args: argparse.Namespace, trial: Any, x1: float, x2: float) -> float:
    command = [sys.executable, *args.script, "--x1", repr(x1), "--x2", repr(x2),
               "--reports", str(args.reports), "--seconds", str(args.seconds)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    value = float("nan")
    for line in out.stdout.splitlines():
        if line.startswith("REPORT "):
            _, step, text = line.split()
            value = float(text)
            if not args.final_only:
                trial.report(value, int(step))
    return value


def inprocess_trial(args: argparse.Namespace, trial: Any, x1: float, x2: float) -> float:
    from branin import work  # bench/trials, on sys.path since main()

    return work(x1, x2, args.reports, args.seconds, trial.report)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--journal", metavar="PATH", help="JournalStorage on this file")
    where.add_argument("--rdb", metavar="URL", help="RDBStorage at this SQLAlchemy URL")
    p.add_argument("--setup", action="store_true", help="create the storage, then exit")
    p.add_argument("--trials", type=int, default=1, help="trials this worker runs")
    p.add_argument("--seed", type=int, default=0, help="RandomSampler seed")
    p.add_argument("--mode", choices=["subprocess", "inprocess"], default="subprocess")
    p.add_argument("--final-only", action="store_true",
                   help="subprocess mode: tell the last value, no trial.report per report")
    p.add_argument("--reports", type=int, default=5)
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--script", nargs="+", default=[str(TRIALS_DIR / "optuna_trial.py")],
                   help="the trial script and its leading arguments (subprocess mode)")
    args = p.parse_args()

    import optuna

    sys.path.insert(0, str(TRIALS_DIR))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(args)
    if args.setup:
        return 0
    study = optuna.create_study(storage=storage, study_name=STUDY, load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=args.seed))
    run = subprocess_trial if args.mode == "subprocess" else inprocess_trial
    for _ in range(args.trials):
        trial = study.ask()
        x1 = trial.suggest_float("x1", -5.0, 10.0)
        x2 = trial.suggest_float("x2", 0.0, 15.0)
        try:
            value = run(args, trial, x1, x2)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"trial {trial.number} failed: {exc}", file=sys.stderr)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return 1
        study.tell(trial, value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
