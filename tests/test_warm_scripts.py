"""The warm process's compiled scripts (hpo.agent.warm.scripts): compiled once per file
version, as Python compiles a script, and left to the child where it cannot be."""

from __future__ import annotations

import os
import zipapp
from importlib.util import MAGIC_NUMBER
from pathlib import Path

from hpo.agent.warm import child
from hpo.agent.warm.scripts import CompiledScripts, read_code


def test_a_script_is_compiled_once_and_again_after_an_edit(tmp_path: Path):
    script = tmp_path / "train.py"
    script.write_text("value = 1\n")
    scripts = CompiledScripts()
    first = scripts.get("train.py", str(tmp_path))
    assert first is not None and scripts.get("train.py", str(tmp_path)) is first
    script.write_text("value = 2\n")  # the same size and file: only its time differs
    stat = script.stat()
    os.utime(script, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = scripts.get("train.py", str(tmp_path))
    assert second is not None and second is not first
    namespace: dict[str, object] = {}
    exec(second, namespace)
    assert namespace["value"] == 2


def test_the_code_has_the_scripts_future_imports_not_the_compilers(tmp_path: Path):
    # This module (like the warm process's) has `from __future__ import annotations`.
    (tmp_path / "train.py").write_text("x: int = 1\nseen = __annotations__\n")
    code = CompiledScripts().get("train.py", str(tmp_path))
    assert code is not None and code.co_filename == "train.py"
    namespace: dict[str, object] = {}
    exec(code, namespace)
    assert namespace["seen"] == {"x": int}


def test_what_the_child_must_read_itself_is_not_compiled(tmp_path: Path):
    scripts = CompiledScripts()
    (tmp_path / "broken.py").write_text("def f(:\n")
    (tmp_path / "compiled.pyc").write_bytes(MAGIC_NUMBER + b"\0" * 12)
    assert scripts.get("broken.py", str(tmp_path)) is None  # the child reports it
    assert scripts.get("missing.py", str(tmp_path)) is None
    # Too deep for the compiler (MemoryError): the child's to report, the warm process
    # must not die of it
    (tmp_path / "deep.py").write_text(f"x = {'-' * 200_000}1\n")
    assert scripts.get("deep.py", str(tmp_path)) is None
    assert scripts.get("compiled.pyc", str(tmp_path)) is None  # runpy runs bytecode
    assert read_code(str(tmp_path / "compiled.pyc"), "compiled.pyc") is None


def test_a_zipapp_is_left_to_runpy_which_runs_its_main(tmp_path: Path):
    # `python app.pyz` runs the archive's __main__.py (a shebang line before it too)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__main__.py").write_text("value = 1\n")
    zipapp.create_archive(tmp_path / "app", tmp_path / "app.pyz",
                          interpreter="/usr/bin/env python3")
    assert CompiledScripts().get("app.pyz", str(tmp_path)) is None
    assert child._run_main(str(tmp_path / "app.pyz"), None)["value"] == 1
