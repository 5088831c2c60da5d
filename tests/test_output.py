"""The compact table of jobs, in a terminal or piped (PIPED_WIDTH): one line per job
whatever the width, the least useful columns left out first (and said so), ids cut to a
prefix when they do not fit whole; ``--wide``: everything."""

from __future__ import annotations

import subprocess
import sys

import pytest
from rich.console import Console

from hpo.cli.output import PIPED_WIDTH, build_table

pytestmark = pytest.mark.timeout(60)

COLUMNS = ["#", "id", "validation/accuracy", "iteration", "alpha", "learning_rate",
           "status", "duration", "agent"]
ROW = [1, "8b3f33e7ecc34ce6a913e319c2e67f23", 0.955556, 4, 0.000168630438, "constant",
       "completed", "0:00:03", "local-b41146-1"]


def render(width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(build_table(None, COLUMNS, [ROW, ROW], compact=True, width=width))
    return [line.rstrip() for line in console.export_text().splitlines() if line.strip()]


def test_a_wide_terminal_shows_every_column_on_one_line_per_job():
    lines = render(160)
    assert len(lines) == 4  # header, rule, two jobs
    assert lines[0].split() == COLUMNS
    assert lines[2].split() == ["1", ROW[1], "0.9556", "4", "0.0001686", "constant",
                                "completed", "0:00:03", "local-b41146-1"]  # the id whole


def test_a_narrow_terminal_drops_columns_in_order_and_says_which():
    lines = render(100)
    assert all(len(line) <= 100 for line in lines)
    assert lines[-1] == "not shown (too narrow; --wide shows all): agent"
    assert lines[2].split()[:3] == ["1", "8b3f33e7", "0.9556"]
    assert "local-" not in lines[2]


def test_a_very_narrow_terminal_keeps_the_id_whole_and_cuts_other_cells():
    lines = render(50)
    assert all(len(line) <= 50 for line in lines)
    assert lines[2].split()[:2] == ["1", "8b3f33e7"]
    caption = " ".join(lines[4:])
    assert caption == ("not shown (too narrow; --wide shows all): iteration, status, "
                       "duration, agent")
    assert "…" in lines[0]  # a header cut to fit


PIPED = """
import sys
from hpo.cli import output
if sys.argv[1:] == ["--wide"]:
    output.set_wide(True)
output.table("jobs", COLUMNS, [ROW, ROW], compact=True)
"""


def piped(*argv: str) -> list[str]:
    """What a table prints into a pipe (no terminal), in a process of its own."""
    code = f"COLUMNS = {COLUMNS!r}\nROW = {ROW!r}\n{PIPED}"
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout.splitlines()


def test_a_piped_table_fits_100_columns_by_the_same_rule_and_wide_shows_all():
    # Given a table of jobs too wide for 100 columns, printed into a pipe
    lines = piped()
    # Then it fits PIPED_WIDTH, by the terminal's rule, saying what it left out and how
    # to see it, with no padding at the ends of lines
    assert all(len(line) <= PIPED_WIDTH for line in lines), lines
    assert lines[-1] == "not shown (too narrow; --wide shows all): agent"
    assert all(line == line.rstrip() for line in lines)
    # And --wide shows every column and whole ids
    wide = piped("--wide")
    assert any(ROW[1] in line and "local-b41146-1" in line for line in wide), wide
    assert not any("not shown" in line for line in wide)
