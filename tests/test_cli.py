"""The `wbcstudy` command's failures: each is one line on stderr, naming what is wrong and what to do, exit status 2."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import wbcstudy
from wbcstudy import cli
from wbcstudy.paths import data_root, project_root

WBCSTUDY = [sys.executable, "-m", "wbcstudy.cli"]


def _one_line(capsys, *words: str) -> str:
    """The captured stderr, checked to be one line holding every word."""
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith("wbcstudy"), out.err
    for word in words:
        assert word in out.err, (word, out.err)
    return out.err


def test_unknown_chapter(capsys):
    assert cli.main(["run", "nosuchchapter"]) == 2
    _one_line(capsys, "unknown chapter 'nosuchchapter'", "data", "wbcstudy run data --profile smoke")


def test_unknown_profile_lists_the_profiles_from_run(capsys):
    from wbcstudy.run import PROFILES

    with pytest.raises(SystemExit) as info:
        cli.main(["run", "data", "--profile", "nosuch"])
    assert info.value.code == 2
    _one_line(capsys, "'nosuch'", *PROFILES, "wbcstudy run --help")


def test_unknown_command_and_extra_arguments(capsys):
    for argv in (["bogus"], ["data", "verify", "pbc", "extra"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
        _one_line(capsys, "wbcstudy --help")


def test_profile_file_missing_for_a_chapter(capsys):
    missing = next((c, p) for c in ("data", "baseline") for p in ("gpu",)
                   if not (project_root() / "notebooks" / "params" / c / f"{p}.yml").is_file())
    assert cli.main(["run", missing[0], "--profile", missing[1]]) == 2
    _one_line(capsys, "no profile file", f"{missing[1]}.yml")


def test_bad_profile_file(capsys, tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "notebooks" / "params" / "data").mkdir(parents=True)
    shutil.copyfile(project_root() / "notebooks" / "data.md", root / "notebooks" / "data.md")
    (root / "notebooks" / "params" / "data" / "smoke.yml").write_text("no_such_parameter: 3\n")
    monkeypatch.setenv("WBCSTUDY_ROOT", str(root))
    assert cli.main(["run", "data", "--profile", "smoke"]) == 2
    _one_line(capsys, "smoke.yml", "no_such_parameter")
    (root / "notebooks" / "params" / "data" / "smoke.yml").write_text("- a list\n")
    assert cli.main(["run", "data", "--profile", "smoke"]) == 2
    _one_line(capsys, "smoke.yml", "mapping")


def test_unknown_dataset(capsys):
    for action in ("fetch", "verify", "sources"):
        assert cli.main(["data", action, "nosuch"]) == 2
        _one_line(capsys, "unknown dataset 'nosuch'", "pbc", "wbcstudy data sources")


def test_verify_with_an_empty_data_root(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    assert cli.main(["data", "verify"]) == 2
    _one_line(capsys, "not found", str(tmp_path), "WBCSTUDY_DATA")
    assert cli.main(["data", "verify", "pbc"]) == 2
    _one_line(capsys, "dataset 'pbc' not found", "WBCSTUDY_DATA")


def test_build_with_an_empty_data_root(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))  # never near the committed manifests
    assert cli.main(["data", "build"]) == 2
    _one_line(capsys, "not found", "WBCSTUDY_DATA")


@pytest.mark.skipif(not (data_root() / "all_idb2").is_dir(), reason="needs the data mirror")
def test_verify_partial_data(capsys, tmp_path, monkeypatch):
    shutil.copytree(data_root() / "all_idb2", tmp_path / "all_idb2")
    victim = tmp_path / "all_idb2" / "masks" / "Im002_1.png"
    victim.chmod(0o644)
    victim.unlink()
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    assert cli.main(["data", "verify", "all_idb2"]) == 2
    err = _one_line(capsys, "all_idb2 (1)", "wbcstudy data verify")
    assert "Traceback" not in err


def test_fetch_without_download_or_hash(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    assert cli.main(["data", "fetch", "all_idb2"]) == 2
    _one_line(capsys, "no public download", "scotti.di.unimi.it")


def test_papermill_failure_lines():
    from wbcstudy.data.sources import DatasetMissing, missing_message

    missing = types.SimpleNamespace(ename="DatasetMissing", evalue=missing_message("pbc"), exec_count=4)
    line, status = cli._papermill_failure(missing, "data", Path("build/runs/smoke/data.ipynb"))
    assert status == 2 and line == missing_message("pbc").splitlines()[0] and DatasetMissing.__name__ == "DatasetMissing"
    bug = types.SimpleNamespace(ename="ZeroDivisionError", evalue="division by zero", exec_count=7)
    line, status = cli._papermill_failure(bug, "data", Path("x.ipynb"))
    assert status == 1 and line == ("chapter 'data' failed in cell [7]: ZeroDivisionError: division by zero; "
                                    "the executed notebook x.ipynb shows the traceback")


def test_check_is_wired_lazily(monkeypatch):
    calls = []
    fake = types.ModuleType("wbcstudy.check")
    fake.main = lambda argv: calls.append(argv) or 3
    monkeypatch.setitem(sys.modules, "wbcstudy.check", fake)
    monkeypatch.setattr(wbcstudy, "check", fake, raising=False)
    assert cli.main(["check", "--root", "x"]) == 3
    assert calls == [["--root", "x"]]


@pytest.mark.parametrize("argv, address", [([], "127.0.0.1"), (["--address", "0.0.0.0"], "0.0.0.0")])
def test_app_binds_to_this_machine_unless_told(monkeypatch, argv, address):
    seen = {}
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: seen.update(cmd=cmd, env=env) or 0)
    assert cli.main(["app", *argv]) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--server.address") + 1] == address
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "20"


def test_app_with_a_missing_checkpoint(capsys, tmp_path):
    assert cli.main(["app", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    _one_line(capsys, "no checkpoint", "wbcstudy run trust --profile smoke")


def test_chapter_run_on_an_empty_data_root_ends_with_one_line(tmp_path):
    """The end-to-end case: papermill runs the data chapter, the kernel raises DatasetMissing, one line comes out."""
    env = {**os.environ, "WBCSTUDY_DATA": str(tmp_path / "empty"), "WBCSTUDY_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([*WBCSTUDY, "run", "data", "--profile", "smoke", "--output", str(tmp_path / "data.ipynb")],
                         capture_output=True, text=True, env=env, cwd=project_root(), timeout=600)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("wbcstudy: dataset 'pbc' not found at") and "WBCSTUDY_DATA" in out.stderr


def test_kernel_stderr_is_collected_and_its_noise_dropped(capfd):
    with cli._kernel_stderr() as lines:
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write("
                        "'[IPKernelApp] WARNING | Kernel is running over TCP without encryption.\\nreal warning\\n')"],
                       check=True)
    assert lines == ["real warning"]
    assert capfd.readouterr().err == ""
