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
    (root / "notebooks" / "params" / "data" / "smoke.yml").write_text("seed: 1\ncells_per_class: [1, 2\nseed: 2\n")
    assert cli.main(["run", "data", "--profile", "smoke"]) == 2
    _one_line(capsys, "smoke.yml", "not valid YAML", "at line 3")


def _command(*argv: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*WBCSTUDY, *argv], capture_output=True, text=True, env={**os.environ, **env},
                          cwd=project_root(), timeout=300)


def test_malformed_profile_and_unknown_parameter_end_with_one_line_not_a_traceback(tmp_path):
    """As the user sees it: the command's exit status and stderr (no papermill run: both are refused before)."""
    root = tmp_path / "project"
    (root / "notebooks" / "params" / "data").mkdir(parents=True)
    shutil.copyfile(project_root() / "notebooks" / "data.md", root / "notebooks" / "data.md")
    (root / "notebooks" / "params" / "data" / "smoke.yml").write_text("seed: [1\n  eval_limit: 3\n")
    for out, word in ((_command("run", "data", "--profile", "smoke", WBCSTUDY_ROOT=str(root)), "not valid YAML"),
                      (_command("run", "baseline", "-p", "no_such_param", "1"), "no_such_param")):
        assert out.returncode == 2, out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("wbcstudy: ") and word in out.stderr


def test_parameter_overrides_are_checked_like_profile_values(capsys, monkeypatch):
    from wbcstudy import run

    assert cli.main(["run", "baseline", "-p", "lr", "fast"]) == 2
    _one_line(capsys, "-p", "lr='fast'", "type str", "float")
    assert cli.main(["run", "baseline", "-p", "seeds", "2", "-p", "seeds", "true"]) == 2  # the last one counts
    _one_line(capsys, "seeds=True", "bool")
    assert cli.main(["run", "baseline", "-p", "profile", "cpu"]) == 2
    _one_line(capsys, "-p profile", "--profile")
    assert cli.main(["run", "baseline", "-p", "lr", "0.01", "--publish"]) == 2
    _one_line(capsys, "-p and --publish")
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "baseline", "-p", "lr"])
    assert info.value.code == 2
    _one_line(capsys, "-p", "expected 2 arguments")
    seen = {}
    monkeypatch.setattr(run, "run_chapter", lambda *a, **k: seen.update(k) or Path("out.ipynb"))
    assert cli.main(["run", "baseline", "--profile", "smoke", "-p", "lr", "0.01", "-p", "seeds", "2",
                     "-p", "deterministic", "false"]) == 0
    assert seen["overrides"] == {"lr": 0.01, "seeds": 2, "deterministic": False}
    params = run.check_profile("baseline", "smoke", seen["overrides"])
    assert params["lr"] == 0.01 and params["seeds"] == 2 and params["deterministic"] is False
    assert params["train_limit"] == run.load_profile("baseline", "smoke")["train_limit"]  # the profile's other values


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


@pytest.mark.skipif(not (data_root() / "all_idb2").is_dir(), reason="needs the data mirror")
def test_verify_names_corrupted_and_missing_datasets_in_its_last_line(capsys, tmp_path, monkeypatch):
    shutil.copytree(data_root() / "all_idb2", tmp_path / "all_idb2")
    victim = tmp_path / "all_idb2" / "images" / "Im001_1.png"
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes()[:-10] + bytes(10))  # corrupted, still there
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    assert cli.main(["data", "verify"]) == 2  # every dataset: four missing, one corrupted
    out, err = capsys.readouterr()
    assert "all_idb2: 1 problem(s)" in out and "changed: all_idb2/images/Im001_1.png" in out
    assert err.count("\n") == 1
    for word in ("differ from their inventories: all_idb2 (1)", "not found under the data root", str(tmp_path),
                 "WBCSTUDY_DATA", "wbcstudy data verify"):
        assert word in err, (word, err)
    missing = err.split("dataset(s) ")[2].split(" not found")[0]
    assert sorted(missing.split(", ")) == ["bccd", "pbc", "wbcatt", "zheng2018"]


def test_fetch_without_download_or_hash(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("WBCSTUDY_DATA", str(tmp_path))
    assert cli.main(["data", "fetch", "all_idb2"]) == 2
    _one_line(capsys, "no public download", "scotti.di.unimi.it")


def test_papermill_failure_lines():
    from wbcstudy.data.sources import DatasetMissing, missing_message

    missing = types.SimpleNamespace(ename="DatasetMissing", evalue=missing_message("pbc"), exec_count=4)
    line, status = cli._papermill_failure(missing, "data", Path("build/runs/smoke/data.ipynb"))
    assert (status == 2 and line == missing_message("pbc").splitlines()[0]
            and DatasetMissing.__name__ == "DatasetMissing")
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
def test_app_binds_to_this_machine_unless_told(monkeypatch, argv, address, tmp_path):
    monkeypatch.setenv("WBCSTUDY_ROOT", str(tmp_path))  # no build/trust/app_model.pt: the page says how to make one
    monkeypatch.delenv("WBCSTUDY_APP_CHECKPOINT", raising=False)
    seen = {}
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: seen.update(cmd=cmd, env=env) or 0)
    assert cli.main(["app", *argv]) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--server.address") + 1] == address
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "20"


def test_app_with_a_missing_checkpoint(capsys, tmp_path):
    assert cli.main(["app", "--checkpoint", str(tmp_path / "nope.pt")]) == 2
    _one_line(capsys, "no checkpoint", "wbcstudy run trust --profile cpu")


def _app_checkpoint(path: Path, **info) -> Path:
    from wbcstudy.app import save_checkpoint
    from wbcstudy.models.trust_cnn import build_trust_model

    model = build_trust_model("trust_cnn", 5, 32, [0.5] * 3, [0.25] * 3)
    return save_checkpoint(path, model, "trust_cnn", list("abcde"), 32, [0.5] * 3, [0.25] * 3, **info)


def test_app_refuses_a_smoke_checkpoint_and_a_garbage_file(capsys, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: calls.append(env) or 0)
    smoke = _app_checkpoint(tmp_path / "smoke.pt", profile="smoke", test_accuracy=0.23)
    assert cli.main(["app", "--checkpoint", str(smoke)]) == 2
    _one_line(capsys, "smoke profile", "not a classifier", "wbcstudy run trust --profile cpu")
    monkeypatch.setenv("WBCSTUDY_APP_CHECKPOINT", str(smoke))  # the default checkpoint is checked too
    assert cli.main(["app"]) == 2
    _one_line(capsys, "smoke profile")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert cli.main(["app", "--checkpoint", str(garbage)]) == 2
    err = _one_line(capsys, "cannot be loaded", "not an app checkpoint")
    assert "weights_only" not in err and "will likely succeed" not in err
    assert not calls  # Streamlit never started
    trained = _app_checkpoint(tmp_path / "cpu.pt", profile="cpu", test_accuracy=0.97)
    assert cli.main(["app", "--checkpoint", str(trained)]) == 0
    assert calls[0]["WBCSTUDY_APP_CHECKPOINT"] == str(trained.resolve())


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
