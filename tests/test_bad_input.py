"""Bad input, generated systematically: every numeric setting of hpo.yaml and every
numeric flag of the command lines with negative, zero, NaN, infinite, huge and
non-numeric values; every name with empty, over-long, multi-line and control-character
values; YAML bombs, deep nesting, binary garbage; strategy paths that name no strategy.

Each must end at once with exit code 2 and exactly one line on stderr, never a
traceback. The command lines run in-process through their ``main(argv)`` (what a
console script calls), with the step after the checks replaced by a stub that fails
the test ("accepted"); a handful run as real subprocesses too.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import hpo.agent.cli as agent_cli
import hpo.cli.main as hpo_cli
import hpo.controller.cli as controller_cli
from hpo import defaults
from hpo.errors import ConfigError
from hpo.lifecycle import TaskType
from hpo.space.ranges import LogUniformParameterRange, UniformParameterRange
from hpo.store import open_store

DEADLINE_S = 10  # "at once": a check that takes longer is a hang


class Accepted(AssertionError):
    """The bad input got past every check."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One private HPO_HOME and store for the whole file (the inputs never write), a
    template task for hpo.yaml's base_task, a script for `hpo task create`, and stubs
    for the step after the checks (running an optimization, an agent, a server)."""
    home = tmp_path_factory.mktemp("bad-input")
    store_url = f"sqlite:///{home / 'hpo.db'}"
    script = home / "train.py"
    script.write_text("print('training')\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPO_HOME", str(home))
        mp.setenv("HPO_STORE_URL", store_url)
        for name in ("HPO_BROKER_URL", "HPO_LOST_AFTER_S", "HPO_TASK_ID", "HPO_TASK_SPEC",
                     "HPO_REPORT_ADDR"):
            mp.delenv(name, raising=False)
        store = open_store()
        base = store.create_task("fuzz", "base", type=TaskType.training)

        def accepted(*args: Any, **kwargs: Any) -> Any:
            raise Accepted("the bad input was accepted")

        mp.setattr(controller_cli, "_run", accepted)
        mp.setattr(agent_cli, "Agent", accepted)
        import uvicorn

        mp.setattr(uvicorn.Server, "run", accepted)
        yield {"home": home, "store_url": store_url, "script": script, "base": base.id,
               "env": dict(os.environ)}
        store.close()


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (with the stack of where it hung) if the block takes longer."""

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_main(main: Callable[[Sequence[str]], int], argv: list[str]) -> tuple[Any, str, str]:
    """A console script's main(argv) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with deadline(DEADLINE_S), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_exit_2(code: Any, stdout: str, stderr: str, prog: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == 2, (code, stdout[:500], stderr[:500])
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr[:2000]
    assert stderr.startswith(f"{prog}") and ": error: " in stderr, stderr[:500]
    assert len(stderr) < 2000, f"{len(stderr)} characters: the input is echoed back whole"


# ----- hpo.yaml -----------------------------------------------------------------------------
# A document is nested dicts and lists whose leaves are YAML text, written as written.

def base_document(base_id: str) -> dict[str, Any]:
    return {
        "base_task": {"project": "fuzz", "name": "base"},
        "hyper_parameters": [
            {"type": "uniform", "name": "lr", "min_value": "0.001", "max_value": "0.1"},
            {"type": "uniform_integer", "name": "epochs", "min_value": "1", "max_value": "5"},
            {"type": "log_uniform", "name": "alpha", "min_value": "-4", "max_value": "-1"},
        ],
        "objective": {"title": "validation", "series": "loss", "sign": "min"},
        "strategy": "random",
        "max_number_of_concurrent_tasks": "2",
        "total_max_jobs": "4",
    }


def emit(node: Any) -> str:
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k}: {emit(v)}" for k, v in node.items()) + "}"
    if isinstance(node, list):
        return "[" + ", ".join(emit(v) for v in node) + "]"
    return str(node)


def render(document: dict[str, Any]) -> str:
    return "".join(f"{key}: {emit(value)}\n" for key, value in document.items())


def with_value(path: str, text: str) -> Callable[[dict[str, Any]], None]:
    """Set the field at a dotted path (``hyper_parameters.0.min_value``) to YAML text."""

    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = text
        else:
            node[last] = text

    return change


HUGE_INT = "1" + "0" * 400  # 10**400 as an integer
NOT_A_NUMBER = [".nan", ".inf", "-.inf", "1.0e+400", '"text"', "[]", "{}", "true"]
NUMERIC_FIELDS = {
    # field: values that are bad for it besides NOT_A_NUMBER
    "max_number_of_concurrent_tasks": ["-1", "0", "2.5", HUGE_INT, "99999999999999999999"],
    "total_max_jobs": ["-1", "0", "2.5", HUGE_INT, "99999999999999999999"],
    "save_top_k_tasks_only": ["-1", "0", "2.5", HUGE_INT],
    "min_iteration_per_job": ["-1", "2.5", HUGE_INT],
    "max_iteration_per_job": ["-1", "0", "2.5", HUGE_INT],
    "optimization_time_limit": ["-1", "0", "1.0e+30", HUGE_INT],
    "compute_time_limit": ["-1", "0", "1.0e+30", HUGE_INT],
    "time_limit_per_job": ["-1", "0", "-0.5", "1.0e+30", HUGE_INT],
    "hyper_parameters.0.min_value": ["1.0e+301", HUGE_INT, "99999999999999999999"],
    "hyper_parameters.0.max_value": ["-1.0e+301", HUGE_INT, "-" + HUGE_INT],
    "hyper_parameters.0.step_size": ["-1", "0", "5", HUGE_INT],
    "hyper_parameters.1.min_value": ["2.5", HUGE_INT, "99999999999999999999"],
    "hyper_parameters.1.max_value": ["2.5", "-" + HUGE_INT, "0"],
    "hyper_parameters.1.step_size": ["-1", "0", "0.5", HUGE_INT],
    "hyper_parameters.2.min_value": ["-1.0e+301", HUGE_INT],
    "hyper_parameters.2.max_value": ["400", HUGE_INT],
    "hyper_parameters.2.base": ["-1", "0", "1", HUGE_INT],
}
TOO_LONG = "x" * 600  # longer than every name column (255 or 512)
BAD_NAMES = {"empty": '""', "blank": '"   "', "too long": TOO_LONG, "newline": '"a\\nb"',
             "tab": '"a\\tb"', "escape sequence": '"a\\e[31mred"', "bell": '"a\\ab"',
             "NUL": '"a\\0b"', "number": "7", "list": "[]", "mapping": "{}"}
NAME_FIELDS = ["execution_queue", "spawn_project", "objective.title", "objective.series",
               "base_task.project", "base_task.name", "hyper_parameters.0.name"]
BAD_STRATEGIES = ["os.system", "builtins.print", "json.JSONDecoder", "os.path", "'..x'",
                  "''", "5", "[]", "{}", "hpo.strategies.base.Decision",
                  "/no/such/file.py:Strategy", "broken_strategy.Strategy", "x" * 1000 + ".y",
                  "'os.system:x'", "hpo.strategies.base.SearchStrategy"]


def yaml_cases() -> dict[str, Callable[[dict[str, Any]], None] | str | bytes]:
    """Each case: a change to the base document, or the whole file (text or bytes)."""
    cases: dict[str, Callable[[dict[str, Any]], None] | str | bytes] = {}
    for field, extra in NUMERIC_FIELDS.items():
        for value in NOT_A_NUMBER + extra:
            cases[f"{field}={value[:20]}"] = with_value(field, value)
    for field in NAME_FIELDS:
        for label, value in BAD_NAMES.items():
            cases[f"{field}={label}"] = with_value(field, value)
        cases[f"{field}=10 MB"] = with_value(field, "x" * 10_000_000)
    for value in BAD_STRATEGIES:
        cases[f"strategy={value[:30]}"] = with_value("strategy", value)
    # Nine values, each level nine aliases of the one before: 9**9 values expanded.
    levels = ['&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]'] + [
        f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    cases.update({
        "billion laughs in values": with_value(
            "hyper_parameters.0", f"{{type: discrete, name: lol, values: [{', '.join(levels)}]}}"),
        "billion laughs in mappings": "m0: &m0 {a: lol, b: lol}\n" + "".join(
            f"m{i}: &m{i} {{{', '.join(f'k{j}: *m{i - 1}' for j in range(9))}}}\n"
            for i in range(1, 9)),
        "alias cycle": "a: &a [1, *a]\n",
        "alias cycle in a mapping": "a: &a {b: *a}\n",
        "undefined alias": "a: *nowhere\n",
        "duplicate anchor": "a: &x 1\nb: &x 2\nc: *x\n",
        "5000 nested lists": "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "5000 nested mappings": "a: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "5000 nested block lists": "".join("  " * i + "-\n" for i in range(5000)),
        "a list": "- base_task\n- objective\n",
        "a string": "just some text\n",
        "a number": "42\n",
        "empty": "",
        "only a comment": "# nothing here\n",
        "2 MB of comment": "#" + "x" * (2 << 20) + "\n",
        "binary garbage": bytes(range(256)) * 16,
        "NUL bytes": b"base_task: a\x00b\n",
        "invalid UTF-8": b"base_task: \xff\xfe\n",
        "a python tag": "a: !!python/object/apply:os.system [echo hi]\n",
        "an unknown tag": "a: !custom 1\n",
        "an unhashable key": "{[1, 2]: 3}\n",
        "a bad date": "total_max_jobs: 2024-13-45\n",
        "a 5000-digit integer": "total_max_jobs: " + "9" * 5000 + "\n",
        "tabs for indentation": "base_task:\n\tproject: p\n",
        "unterminated quote": 'base_task: "abc\n',
        "unknown field": with_value("max_jobs", "3"),
        "a non-string field name": "1: 2\n",
        "hyper_parameters not a list": with_value("hyper_parameters", "{}"),
        "hyper_parameters empty": with_value("hyper_parameters", "[]"),
        "a range that is a string": with_value("hyper_parameters.0", "lr"),
        "a range of unknown type": with_value("hyper_parameters.0.type", "gaussian"),
        "a range with no name": with_value("hyper_parameters.0.name", '""'),
        "values not a list": with_value("hyper_parameters", "[{type: discrete, name: a, "
                                        "values: 3}]"),
        "objective not a mapping": with_value("objective", "[1, 2]"),
        "objective sign": with_value("objective.sign", "up"),
        "strategy_kwargs a list": with_value("strategy_kwargs", "[1]"),
        "strategy_kwargs unknown": with_value("strategy_kwargs", "{temperature: 3}"),
        "base_task a number": with_value("base_task", "5"),
        "base_task a 100 KB id": with_value("base_task", "a" * 100_000),
        "base_task an id with a newline": with_value("base_task", '"abcd\\nef"'),
        "base_task a script name too long": with_value(
            "base_task", f"{{script: {'x' * 1000}.py, project: p, name: n}}"),
        "base_task a script path too long": with_value(
            "base_task", f"{{script: {'x/' * 3000}a.py, project: p, name: n}}"),
        "base_task a script of no user": with_value(
            "base_task", "{script: ~nobody-at-all/train.py, project: p, name: n}"),
        "base_task a script with NUL": with_value(
            "base_task", '{script: "a\\0b.py", project: p, name: n}'),
        "base_task a working_dir too long": with_value(
            "base_task", f"{{script: train.py, working_dir: {'d' * 1000}, project: p, name: n}}"),
    })
    return cases


YAML_CASES = yaml_cases()


def write_case(folder: Path, case: Callable[[dict[str, Any]], None] | str | bytes,
               base_id: str) -> Path:
    path = folder / "hpo.yaml"
    if isinstance(case, bytes):
        path.write_bytes(case)
    elif isinstance(case, str):
        path.write_text(case)
    else:
        document = base_document(base_id)
        case(document)
        path.write_text(render(document))
    return path


def test_the_base_document_is_valid(env, tmp_path):
    # Given the document every case changes one thing of
    path = write_case(tmp_path, lambda d: None, env["base"])
    # When hpo-controller starts it, it gets past every check (to the stub)
    with pytest.raises(Accepted):
        run_main(controller_cli.main, ["start", str(path)])


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_a_malformed_hpo_yaml_is_one_line_exit_2(env, tmp_path, case):
    (tmp_path / "broken_strategy.py").write_text("this is not python (\n")
    (tmp_path / "train.py").write_text("print('training')\n")
    path = write_case(tmp_path, YAML_CASES[case], env["base"])
    code, out, err = run_main(controller_cli.main, ["start", str(path)])
    assert_one_line_exit_2(code, out, err, "hpo-controller")
    assert "hpo.yaml" in err  # the message names the file


# ----- command lines ----------------------------------------------------------------------

BAD_FLOATS = ["-1", "nan", "inf", "-inf", "1e400", "1e30", "text", "", "0x10"]
BAD_INTS = ["-1", "2.5", "nan", "inf", "text", "", "1" + "0" * 30, "9" * 5000]
BAD_CLI_NAMES = ["", "   ", "x" * 600, "a\nb", "a\tb", "a\x1b[31mred", "a\x00b", "a\x07"]
BAD_IDS = ["", "abc", "zzzz", "a" * 100_000, "abcd\nef", "../../etc/passwd", "abcd*"]
BAD_BROKERS = ["garbage://", "", "redis", "http://localhost", "file:///tmp/x"]
BAD_PORTS = ["-1", "65536", "99999", "nan", "text", "1e400", "2.5", ""]


def cli_cases(script: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (program, argv)."""
    cases: dict[str, tuple[str, list[str]]] = {}

    def add(prog: str, argv: list[str]) -> None:
        cases[f"{prog} {' '.join(argv)}"[:120] + f" #{len(cases)}"] = (prog, argv)

    for flag in ("--grace", "--shutdown-timeout", "--heartbeat", "--lost-after",
                 "--max-log-mb", "--monitor-period"):
        for value in BAD_FLOATS:
            add("hpo-agent", [f"{flag}={value}"])
    for flag in ("--heartbeat", "--monitor-period", "--lost-after"):
        add("hpo-agent", [f"{flag}=0"])
    for flag in ("--retries", "--concurrency", "--gpus-per-task"):
        for value in BAD_INTS:
            add("hpo-agent", [f"{flag}={value}"])
    add("hpo-agent", ["--concurrency=0"])
    add("hpo-agent", ["--concurrency=100000"])
    for flag in ("--name", "--queue"):
        for value in BAD_CLI_NAMES:
            add("hpo-agent", [f"{flag}={value}"])
    for value in BAD_BROKERS:
        add("hpo-agent", [f"--broker={value}"])
    for value in ("0-99999999", "x", "3-1", "0,0", "-1", "0-" + "9" * 5000):
        add("hpo-agent", [f"--gpus={value}"])
    for argv in (["--gpus=0", "--cpu-only"], ["--gpus-per-task=2"], ["--gpus=0,1",
                 "--gpus-per-task=3"], ["--lost-after=1", "--heartbeat=5"],
                 ["--gpus=0", "--concurrency=2"], ["--nope"], ["stray"],
                 [f"--exit-with={os.getpid()}"]):  # not its parent: it would stop at once
        add("hpo-agent", argv)

    for value in ["-5", "-1", "nan", "inf", "1e400", "text", ""]:
        add("hpo", ["workers", "--reap", f"--lost-after={value}"])
    for value in BAD_INTS:
        add("hpo", ["workers", "--reap", f"--retries={value}"])
    for value in BAD_BROKERS:
        add("hpo", ["workers", "--reap", f"--broker={value}"])

    create = ["task", "create", f"--script={script}"]
    for value in ["-5", "0", "nan", "inf", "1e400", "text"]:
        add("hpo", [*create, "--project=p", "--name=n", f"--time-limit={value}"])
    for value in BAD_CLI_NAMES:
        add("hpo", [*create, f"--project={value}", "--name=n"])
        add("hpo", [*create, "--project=p", f"--name={value}"])
        add("hpo", ["task", "list", f"--project={value}"])
        add("hpo", ["task", "enqueue", "abcd", f"--queue={value}"])
        add("hpo", ["task", "clone", "abcd", f"--name={value}"])
    add("hpo", ["task", "list", "--project=" + "x" * 10_000_000])
    for param in ("novalue", "=1", "a\nb=1", "x" * 300 + "=1", "x=" + "[" * 100_000,
                  "x=1e400"):
        add("hpo", [*create, "--project=p", "--name=n", f"--param={param}"])
    add("hpo", ["task", "create", "--script=/no/such.py", "--project=p", "--name=n"])
    for value in [*BAD_INTS, "0"]:
        add("hpo", ["task", "list", f"--limit={value}"])
        add("hpo", ["task", "logs", "abcd", f"--tail={value}"])
    for value in BAD_IDS:
        for action in ("show", "logs", "scalars", "abort", "dequeue", "enqueue", "clone"):
            add("hpo", ["task", action, value])
        add("hpo", ["task", "list", f"--parent={value}"])
    for value in BAD_BROKERS:
        add("hpo", ["task", "enqueue", "abcd", f"--broker={value}"])
    for value in BAD_PORTS:
        add("hpo", ["ui", f"--port={value}"])
    add("hpo", ["ui", "--host=999.1.1.1", "--port=0"])
    add("hpo", ["nope"])
    add("hpo", [])

    for flag in ("--local-agents", "--top"):
        for value in [*BAD_INTS, "0"]:
            add("hpo-controller", ["start", "x.yaml", f"{flag}={value}"])
    add("hpo-controller", ["start", "x.yaml", "--local-agents=5000"])
    for value in [*BAD_INTS, "0"]:
        add("hpo-controller", ["list", f"--limit={value}"])
        add("hpo-controller", ["status", f"--top={value}"])
    for value in BAD_IDS:
        for action in ("status", "stop", "resume", "report"):
            add("hpo-controller", [action, value])
    for value in BAD_BROKERS:
        add("hpo-controller", ["start", "x.yaml", f"--broker={value}"])
    add("hpo-controller", ["start", "/no/such/hpo.yaml"])
    add("hpo-controller", ["start", "a\x00b.yaml"])
    add("hpo-controller", ["start", "x" * 1000 + ".yaml"])
    add("hpo-controller", ["start", "~nobody-at-all/hpo.yaml"])
    for script in ("x" * 1000 + ".py", "~nobody-at-all/t.py", "a\x00b.py", "x/" * 3000):
        add("hpo", ["task", "create", f"--script={script}", "--project=p", "--name=n"])
    add("hpo", [*create, "--project=p", "--name=n", "--working-dir=" + "d" * 1000])
    return cases


MAINS: dict[str, Callable[[Sequence[str]], int]] = {
    "hpo": hpo_cli.main, "hpo-agent": agent_cli.main, "hpo-controller": controller_cli.main}
CLI_CASES = cli_cases("SCRIPT")


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_a_bad_command_line_is_one_line_exit_2(env, case):
    prog, argv = CLI_CASES[case]
    argv = [a.replace("SCRIPT", str(env["script"])) for a in argv]
    code, out, err = run_main(MAINS[prog], argv)
    assert_one_line_exit_2(code, out, err, prog)


ENV_CASES = [
    *[("HPO_BROKER_URL", "garbage://", prog, argv) for prog, argv in [
        ("hpo", ["workers", "--reap"]), ("hpo", ["task", "enqueue", "abcd"]),
        ("hpo-agent", []), ("hpo-controller", ["start", "x.yaml"]),
        ("hpo-controller", ["resume", "abcd"])]],
    *[("HPO_LOST_AFTER_S", value, prog, argv) for value in ("abc", "-5", "nan", "1e400")
      for prog, argv in [("hpo", ["workers"]), ("hpo-agent", [])]],
    ("HPO_LOST_AFTER_S", "0", "hpo-agent", []),
]


@pytest.mark.parametrize("variable,value,prog,argv", ENV_CASES,
                         ids=[f"{v}={x} {p} {' '.join(a)}" for v, x, p, a in ENV_CASES])
def test_a_bad_environment_variable_is_one_line_exit_2(env, monkeypatch, variable, value,
                                                       prog, argv):
    monkeypatch.setenv(variable, value)
    code, out, err = run_main(MAINS[prog], argv)
    assert_one_line_exit_2(code, out, err, prog)
    assert variable in err or "--lost-after" in err, err


def test_every_flag_error_names_the_range(env):
    # Given bad numbers for flags of each kind, the line states the range to use
    for prog, argv, expected in [
        ("hpo-agent", ["--heartbeat=0"], f"from {defaults.MIN_PERIOD_S:g} to"),
        ("hpo-agent", ["--retries=-1"], "an integer from 0 to"),
        ("hpo", ["workers", "--lost-after=-5"], "a number of seconds from 0 to"),
        ("hpo", ["ui", "--port=99999"], "an integer from 0 to 65535"),
        ("hpo", ["task", "list", "--project=a\nb"], "printable characters only"),
        ("hpo", ["task", "list", f"--project={'x' * 300}"], "255 at most"),
        ("hpo-controller", ["start", "--broker=garbage://"], "redis://"),
    ]:
        code, _, err = run_main(MAINS[prog], argv)
        assert code == 2 and expected in err, (argv, err)


def test_a_bad_range_in_python_is_a_config_error():
    # The same ranges as Python objects (HyperParameterOptimizer's arguments)
    for make in (lambda: UniformParameterRange("x", 0, 10**400),
                 lambda: UniformParameterRange("x", 0, float("inf")),
                 lambda: UniformParameterRange("x", -1e301, 1),
                 lambda: LogUniformParameterRange("x", 0, 400)):
        with pytest.raises(ConfigError):
            make()


def test_huge_integers_are_one_config_error_not_an_overflow():
    from hpo import limits

    for value in (10**400, 10**5000):  # the second has no repr at all
        with pytest.raises(ConfigError, match="from 0 to 10"):
            limits.check_number("x", value, 0, 10)
        with pytest.raises(ConfigError):
            UniformParameterRange("x", 0, value)


def test_names_in_any_script_pass_and_only_control_characters_are_refused():
    from hpo import limits

    # Persian with a zero-width non-joiner, a non-breaking space, Chinese, an emoji
    # sequence joined by a zero-width joiner: text, not control characters
    for name in ("مدل\u200cها", "lr\u00a0x", "Args/学习率", "\U0001f469\u200d\U0001f52c"):  # noqa: RUF001
        assert limits.check_name("parameter", name) == name
    for name in ("a\nb", "a\tb", "a\u2028b", "a\x1bb"):
        with pytest.raises(ConfigError, match="control character"):
            limits.check_name("parameter", name)


def test_a_bad_name_in_the_sdk_is_a_config_error(env):
    from hpo.sdk.task import Task

    for project, name in (("a\nb", "n"), ("p", "x" * 600), ("p" * 300, "n"), ("p", "\x1b")):
        with pytest.raises(ConfigError):
            Task.init(project_name=project, task_name=name, auto_connect_arg_parser=False)
        assert Task.current_task() is None
    with pytest.raises(ConfigError):
        Task.enqueue("abcd", queue_name="q" * 300)


# ----- a few real processes ---------------------------------------------------------------

REAL = [
    ["-m", "hpo.agent.cli", "--heartbeat", "0"],
    ["-m", "hpo.agent.cli", "--broker", "garbage://"],
    ["-m", "hpo.cli.main", "workers", "--reap", "--lost-after", "-5"],
    ["-m", "hpo.cli.main", "ui", "--port", "99999"],
    ["-m", "hpo.controller.cli", "start", "BOMB"],
]


@pytest.mark.parametrize("argv", REAL, ids=[" ".join(a[1:4]) for a in REAL])
def test_a_real_process_with_bad_input_exits_2_with_one_line(env, tmp_path, argv):
    bomb = write_case(tmp_path, YAML_CASES["billion laughs in values"], env["base"])
    argv = [str(bomb) if a == "BOMB" else a for a in argv]
    result = subprocess.run([sys.executable, *argv], env=env["env"], capture_output=True,
                            text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_hpo_ui_answers_a_malformed_id_404_before_any_query(env, tmp_path):
    # Given a server on a store that cannot be opened: any query would be a 503
    unreachable = f"sqlite:///{tmp_path / 'missing-folder' / 'sub' / 'x.db'}"
    (tmp_path / "missing-folder").write_text("a file, so no folder can be made here")
    proc = subprocess.Popen([sys.executable, "-m", "hpo.cli.main", "ui", "--port", "0",
                             "--store", unreachable], env=env["env"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once it listens
        url = line.split(" at ", 1)[1].split(" ", 1)[0].rstrip("/")

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(url + path, timeout=10) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        # When ids that are no id are asked for, the answer is 404 (no query was made)
        for bad in ("a" * 100_000, "zzzz", "abc", "abcd%0Aef", "..%2F..%2Fetc"):
            for path in (f"/tasks/{bad}", f"/optimizations/{bad}", f"/api/tasks/{bad}",
                         f"/api/optimizations/{bad}"):
                assert status(path) == 404, path[:80]
        # and a well-formed id does reach the store (which is down: 503)
        assert status("/tasks/" + "ab" * 16) == 503
    finally:
        proc.terminate()
        proc.wait(timeout=30)
