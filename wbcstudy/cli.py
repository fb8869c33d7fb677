"""The ``wbcstudy`` command: run chapters, build the book, construct and verify the data, check, start the app.

Every failure the user can fix (an unknown chapter, profile or dataset, missing or partial data, a bad profile
file) ends with ONE line on stderr, ``wbcstudy: <what is wrong>: <what to do>``, and exit status 2; never a
traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

#: Exit status of every failure the user can fix (as argparse uses for a usage error).
USAGE_ERROR = 2
#: Exit status of a chapter that failed on its own (its executed notebook holds the traceback).
CHAPTER_FAILED = 1


class CLIError(Exception):
    """A failure reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block) that says where the help is."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(USAGE_ERROR, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _fail(message: str) -> int:
    """Print one line on stderr and return the usage-error status."""
    print(f"wbcstudy: {' '.join(message.split())}", file=sys.stderr)
    return USAGE_ERROR


def _first_line(text: str) -> str:
    """The first non-empty line of a message."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wbcstudy`` command."""
    from wbcstudy.run import PROFILES

    parser = _Parser(prog="wbcstudy", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="execute one chapter notebook with papermill")
    run.add_argument("chapter")
    run.add_argument("--profile", default="cpu", choices=PROFILES)
    run.add_argument("--output", default=None,
                     help="executed notebook path (default: build/runs/<profile>/<chapter>.ipynb)")
    run.add_argument("--publish", action="store_true",
                     help="on success, copy the notebook to the book (cpu) or tests/regression (smoke) and the results "
                          "to book/results")
    run.add_argument("--allow-dirty", action="store_true", help="publish at cpu even with uncommitted changes")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=None,
                     help="set one of the notebook's parameters over the profile's value (repeatable; the value is "
                          "read as YAML, as papermill reads its -y values: 3, 0.1, true, [a, b], text); such a run is "
                          "not published")

    book = sub.add_parser("book", help="run every chapter (cpu) and build the HTML book")
    book.add_argument("--profile", default="cpu", choices=PROFILES)
    book.add_argument("--build-only", action="store_true", help="build from the committed executed chapters")
    book.add_argument("--chapters", nargs="*", default=None)
    book.add_argument("--allow-dirty", action="store_true", help="publish even with uncommitted changes")

    sub.add_parser("regression", help="re-run every chapter at the smoke profile into tests/regression/")
    sub.add_parser("judge", help="re-render the claims tables, the scoreboard and the summary's claim counts from the "
                                 "claims files and the published results (no training)")

    # `wbcstudy check ARGS...` goes to wbcstudy.check.main(ARGS) untouched (see below); listed here for --help
    sub.add_parser("check", help="check the committed artefacts of the book (`wbcstudy check --help`)", add_help=False)

    app = sub.add_parser("app", help="start the trustworthiness chapter's Streamlit app")
    app.add_argument("--checkpoint", default=None, help="app checkpoint (default: build/trust/app_model.pt)")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument("--address", default="127.0.0.1",
                     help="address the server listens on (default 127.0.0.1: this machine only; 0.0.0.0 for every "
                          "interface)")

    data = sub.add_parser("data", help="dataset construction")
    data.add_argument("action", choices=["build", "verify", "fetch", "sources"])
    data.add_argument("dataset", nargs="?", default=None)
    data.add_argument("--all", action="store_true", dest="every_public",
                      help="with fetch: every public dataset, with a progress bar")

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check"]:
        try:
            return _check(argv[1:])
        except CLIError as exc:
            return _fail(str(exc))
    args = parser.parse_args(argv)
    try:
        from wbcstudy.train import force_precision, precision_from_environment

        force_precision(precision_from_environment())  # the one read of WBCSTUDY_PRECISION in this process
        from wbcstudy.notebook import set_library_environment

        set_library_environment()  # the chapters' kernels inherit it
        if args.command == "run":
            return _run(args.chapter, args.profile, args.output, args.publish, args.allow_dirty, args.parameter)
        if args.command == "book":
            return _book(args)
        if args.command == "regression":
            return _regression()
        if args.command == "judge":
            return _judge()
        if args.command == "data":
            return _data(args.action, args.dataset, args.every_public)
        if args.command == "app":
            return _app(args.checkpoint, args.port, args.address)
    except CLIError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    return 0


def _chapter_error(exc: BaseException) -> CLIError:
    """A ChapterError or a missing dataset as a CLIError (other errors are not wrapped)."""
    from wbcstudy.data.sources import DatasetMissing
    from wbcstudy.run import ChapterError

    if isinstance(exc, (ChapterError, DatasetMissing)):
        return CLIError(_first_line(str(exc)))
    raise exc


def _papermill_failure(exc: BaseException, chapter: str, notebook: Path | None) -> tuple[str, int]:
    """The one line (and exit status) for a chapter whose execution raised inside the kernel."""
    from wbcstudy.data.sources import DatasetMissing

    ename, evalue = getattr(exc, "ename", type(exc).__name__), getattr(exc, "evalue", str(exc))
    if ename in (DatasetMissing.__name__, "DatasetNotFoundError"):
        return _first_line(evalue), USAGE_ERROR
    where = f"; the executed notebook {notebook} shows the traceback" if notebook else ""
    cell = getattr(exc, "exec_count", None)
    at = f" in cell [{cell}]" if cell else ""
    return f"chapter {chapter!r} failed{at}: {ename}: {_first_line(evalue)}{where}", CHAPTER_FAILED


#: Lines the kernel process writes on every run that say nothing about the chapter.
_KERNEL_NOISE = ("Kernel is running over TCP without encryption",)


@contextlib.contextmanager
def _kernel_stderr():
    """Collect what the kernel process (which inherits file descriptor 2) writes on stderr, instead of printing it.

    Yields a list that receives the collected lines (less known noise) when the block ends, so that a failed run
    can end with one line while a successful one still shows what the kernel had to say.
    """
    import os
    import tempfile

    lines: list[str] = []
    fd = 2  # what a child process inherits, whatever sys.stderr is
    sys.stderr.flush()
    try:
        saved = os.dup(fd)
    except OSError:  # no descriptor 2 at all: nothing to collect
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            lines += [line for line in text.splitlines() if not any(n in line for n in _KERNEL_NOISE)]


def _run(chapter: str, profile: str, output: str | None, publish: bool, allow_dirty: bool,
         parameters: list[tuple[str, str]] | None = None) -> int:
    """``wbcstudy run``: check the chapter, profile and ``-p`` overrides, execute, and report a failure in one line."""
    from wbcstudy import run as runner

    known = (*runner.CHAPTERS, *getattr(runner, "DRAFTS", ()))
    if chapter not in known:
        raise CLIError(f"unknown chapter {chapter!r}; chapters are: {', '.join(known)} (e.g. `wbcstudy run data "
                       "--profile smoke`)")
    overrides = runner.parse_overrides(parameters)
    if overrides and publish:
        raise CLIError("-p and --publish do not go together: published runs come from the profile files alone "
                       "(put the values in the profile file, or run without --publish)")
    try:
        runner.check_profile(chapter, profile, overrides)
    except Exception as exc:
        raise _chapter_error(exc) from None
    notebook = Path(output) if output else runner.work_path(chapter, profile)
    try:
        with _kernel_stderr() as kernel_lines:
            result = runner.run_chapter(chapter, profile, output, publish=publish, allow_dirty=allow_dirty,
                                        overrides=overrides)
    except Exception as exc:
        if type(exc).__name__ == "PapermillExecutionError":
            line, status = _papermill_failure(exc, chapter, notebook)
            print(f"wbcstudy: {line}", file=sys.stderr)
            return status
        raise _chapter_error(exc) from None
    for line in kernel_lines:
        print(line, file=sys.stderr)
    print(result)
    return 0


def _book(args: argparse.Namespace) -> int:
    """``wbcstudy book``: run and publish the chapters, then build the HTML."""
    from wbcstudy import run as runner

    if args.build_only:
        print(runner.build_book())
        return 0
    chapters = tuple(args.chapters or runner.CHAPTERS)
    unknown = [c for c in chapters if c not in runner.CHAPTERS]
    if unknown:
        raise CLIError(f"unknown chapter(s) {', '.join(map(repr, unknown))}; chapters are: "
                       f"{', '.join(runner.CHAPTERS)}")
    try:
        print(runner.run_book(args.profile, chapters, allow_dirty=args.allow_dirty))
    except Exception as exc:
        if type(exc).__name__ == "PapermillExecutionError":
            line, status = _papermill_failure(exc, "book", None)
            print(f"wbcstudy: {line}", file=sys.stderr)
            return status
        raise _chapter_error(exc) from None
    return 0


def _judge() -> int:
    """``wbcstudy judge``: bring mended prose into the executed copies and re-render the judgement files; print each
    file that changed."""
    from wbcstudy.judgement import write_judgement
    from wbcstudy.paths import project_root
    from wbcstudy.run import sync_all_prose

    written = sync_all_prose() + write_judgement()
    for path in written:
        print(f"re-rendered {path.relative_to(project_root())}")
    print("the claims tables, the scoreboard and the summary's claim counts are current" if not written else
          f"{len(written)} file(s) re-rendered")
    return 0


def _regression() -> int:
    """``wbcstudy regression``: every chapter at smoke, published into tests/regression/ when it succeeds."""
    from wbcstudy import run as runner

    for chapter in runner.CHAPTERS:
        status = _run(chapter, "smoke", None, True, False)
        if status:
            return status
    return 0


def _check(argv: list[str]) -> int:
    """``wbcstudy check``: ``wbcstudy.check.main`` (imported only when asked for)."""
    try:
        from wbcstudy import check
    except ModuleNotFoundError as exc:
        if exc.name != "wbcstudy.check":
            raise
        raise CLIError("this installation has no wbcstudy.check module: update the package "
                       "(`pip install -e .`)") from None
    return int(check.main(argv) or 0)


def streamlit_command(script: Path, port: int, address: str) -> list[str]:
    """The ``streamlit run`` command line of the app: this machine only unless told, the app's own upload limit (MB)."""
    from wbcstudy.app.core import MAX_UPLOAD_BYTES

    return [sys.executable, "-m", "streamlit", "run", str(script),
            "--server.address", address, "--server.port", str(port),
            "--server.maxUploadSize", str(MAX_UPLOAD_BYTES // 10**6),
            "--browser.gatherUsageStats", "false"]


def _app(checkpoint: str | None, port: int, address: str) -> int:
    """``wbcstudy app``: ``streamlit run`` the app script, with the checkpoint passed in ``WBCSTUDY_APP_CHECKPOINT``.

    A checkpoint that is there is checked first: one that cannot be loaded, or a pipeline test's model (the smoke
    profile, a test accuracy near chance), ends with one line instead of a page that classifies with it.
    """
    import os
    import subprocess

    from wbcstudy.app import SCRIPT
    from wbcstudy.app.core import MAKE_CHECKPOINT, CheckpointError, default_checkpoint, read_meta, refusal

    env = dict(os.environ)
    path = Path(checkpoint).resolve() if checkpoint else default_checkpoint()
    if checkpoint and not path.is_file():
        raise CLIError(f"no checkpoint at {path}: run `{MAKE_CHECKPOINT}` to write build/trust/app_model.pt, "
                       "or give the path of an existing one")
    if path.is_file():  # a missing default one: the page says how to make it and lists the ones it finds
        try:
            reason = refusal(read_meta(path))
        except CheckpointError as exc:
            raise CLIError(_first_line(str(exc))) from None
        if reason:
            raise CLIError(f"{path}: {reason}")
    if checkpoint:
        env["WBCSTUDY_APP_CHECKPOINT"] = str(path)
    return subprocess.call(streamlit_command(SCRIPT, port, address), env=env)


def _data(action: str, dataset: str | None, every_public: bool = False) -> int:
    """The ``wbcstudy data`` actions."""
    from wbcstudy.data import construct, sources
    from wbcstudy.paths import data_root

    if dataset is not None and dataset not in sources.SOURCES:
        raise CLIError(sources.unknown_dataset_message(dataset))
    if every_public and (dataset is not None or action != "fetch"):
        raise CLIError("--all goes with `wbcstudy data fetch` and no dataset: `wbcstudy data fetch --all` fetches "
                       "every public dataset")
    keys = [dataset] if dataset else list(sources.SOURCES)
    if action == "build":
        try:
            for name, path in construct.build_manifests().items():
                print(f"{name}: {path}")
        except sources.DatasetMissing as exc:
            raise CLIError(exc.summary) from None
    elif action == "sources":
        for key in keys:
            src = sources.SOURCES[key]
            print(f"{key}: {src.title}\n  {src.homepage}\n  licence: {src.licence}\n  cite: {src.citation}\n"
                  f"  layout: {src.layout}")
    elif action == "fetch":
        return _fetch(keys, sources, data_root(), every_public, single=dataset is not None)
    elif action == "verify":
        return _verify(keys, sources, data_root())
    return 0


def _fetch(keys: list[str], sources, root: Path, every_public: bool, single: bool) -> int:
    """``wbcstudy data fetch``: one dataset (its folder, or one line on stderr), or every one, each reported on its
    own line; the last line, on stderr, names those that could not be fetched."""
    progress = every_public or sys.stderr.isatty()
    if single:
        try:
            print(sources.fetch(keys[0], progress=progress))
        except sources.DatasetMissing as exc:
            raise CLIError(exc.summary) from None
        return 0
    failed: list[str] = []
    for key in keys:
        src = sources.SOURCES[key]
        if every_public and src.download_url is None and not (root / src.folder).is_dir():
            print(f"{key}: skipped, {sources.what_to_do(key)}")
            continue
        try:
            print(f"{key}: {sources.fetch(key, progress=progress)}")
        except sources.DatasetMissing as exc:
            failed.append(key)
            print(f"{key}: not fetched: {exc.summary}")
    if failed:
        raise CLIError(f"dataset(s) {', '.join(failed)} not fetched into the data root {root}: each one's line above "
                       "says why and what to do (`wbcstudy data sources <dataset>` says where each is published)")
    return 0


def _verify(keys: list[str], sources, root: Path) -> int:
    """``wbcstudy data verify``: each dataset against its inventory; problems listed, then one line on stderr that
    names every dataset that is missing or differs."""
    missing: list[str] = []
    broken: dict[str, int] = {}
    for key in keys:
        try:
            report = sources.verify_report(key)
        except sources.DatasetMissing:
            missing.append(key)
            print(f"{key}: not found")
            continue
        except FileNotFoundError as exc:  # no inventory
            raise CLIError(_first_line(str(exc))) from None
        found = report.problems
        print(f"{key}: {'ok' if not found else f'{len(found)} problem(s)'} ({report.describe()})")
        for line in found[:20]:
            print(f"  {line}")
        if found:
            broken[key] = len(found)
    if missing and not broken and len(keys) == 1:
        raise CLIError(sources.missing_message(keys[0]).splitlines()[0])
    parts = []
    if broken:
        parts.append("dataset(s) differ from their inventories: " + ", ".join(f"{k} ({n})" for k, n in broken.items()))
    if missing:
        parts.append(f"dataset(s) {', '.join(missing)} not found under the data root {root}")
    if parts:
        todo = []
        if broken:
            todo.append("restore or re-download the files listed above")
        if missing:
            todo.append("set WBCSTUDY_DATA to the folder that holds the missing ones, or place them there")
        raise CLIError("; ".join(parts) + ": " + " and ".join(todo) + " (`wbcstudy data sources <dataset>` says where "
                       "each is published), then run `wbcstudy data verify` again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
