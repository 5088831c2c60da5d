"""The compact table of jobs in a terminal: one line per job whatever the width, the
least useful columns left out first (and said so), ids cut to a prefix."""

from __future__ import annotations

from rich.console import Console

from hpo.cli.output import build_table

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
    assert lines[2].split() == ["1", "8b3f33e7", "0.9556", "4", "0.0001686", "constant",
                                "completed", "0:00:03", "local-b41146-1"]


def test_a_narrow_terminal_drops_columns_in_order_and_says_which():
    lines = render(100)
    assert all(len(line) <= 100 for line in lines)
    assert lines[-1] == "not shown (narrow terminal): agent"
    assert lines[2].split()[:3] == ["1", "8b3f33e7", "0.9556"]
    assert "local-" not in lines[2]


def test_a_very_narrow_terminal_keeps_the_id_whole_and_cuts_other_cells():
    lines = render(50)
    assert all(len(line) <= 50 for line in lines)
    assert lines[2].split()[:2] == ["1", "8b3f33e7"]
    caption = " ".join(lines[4:])
    assert caption == "not shown (narrow terminal): iteration, status, duration, agent"
    assert "…" in lines[0]  # a header cut to fit
