"""The ``wbcstudy`` command: run chapters, build the book, construct and verify the data."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``wbcstudy`` command."""
    parser = argparse.ArgumentParser(prog="wbcstudy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute one chapter notebook with papermill")
    run.add_argument("chapter")
    run.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    run.add_argument("--output", default=None, help="executed notebook path (default: build/runs/<profile>/<chapter>.ipynb)")
    run.add_argument("--publish", action="store_true",
                     help="on success, copy the notebook to the book (cpu) or tests/regression (smoke) and the results to book/results")
    run.add_argument("--allow-dirty", action="store_true", help="publish at cpu even with uncommitted changes")

    book = sub.add_parser("book", help="run every chapter (cpu) and build the HTML book")
    book.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    book.add_argument("--build-only", action="store_true", help="build from the committed executed chapters")
    book.add_argument("--chapters", nargs="*", default=None)
    book.add_argument("--allow-dirty", action="store_true", help="publish even with uncommitted changes")

    sub.add_parser("regression", help="re-run every chapter at the smoke profile into tests/regression/")

    app = sub.add_parser("app", help="start the trustworthiness chapter's Streamlit app")
    app.add_argument("--checkpoint", default=None, help="app checkpoint (default: build/trust/app_model.pt)")
    app.add_argument("--port", type=int, default=8501)

    data = sub.add_parser("data", help="dataset construction")
    data.add_argument("action", choices=["build", "verify", "fetch", "sources"])
    data.add_argument("dataset", nargs="?", default=None)

    args = parser.parse_args(argv)
    from wbcstudy import run as runner

    if args.command == "run":
        print(runner.run_chapter(args.chapter, args.profile, args.output, publish=args.publish, allow_dirty=args.allow_dirty))
    elif args.command == "book":
        if args.build_only:
            print(runner.build_book())
        else:
            print(runner.run_book(args.profile, tuple(args.chapters or runner.CHAPTERS), allow_dirty=args.allow_dirty))
    elif args.command == "regression":
        for chapter in runner.CHAPTERS:
            print(runner.run_chapter(chapter, "smoke", publish=True))
    elif args.command == "data":
        return _data(args.action, args.dataset)
    elif args.command == "app":
        return _app(args.checkpoint, args.port)
    return 0


def _app(checkpoint: str | None, port: int) -> int:
    """``wbcstudy app``: ``streamlit run`` the app script, with the checkpoint passed in ``WBCSTUDY_APP_CHECKPOINT``."""
    import os
    import subprocess
    from pathlib import Path

    from wbcstudy.app import SCRIPT

    env = dict(os.environ)
    if checkpoint:
        env["WBCSTUDY_APP_CHECKPOINT"] = str(Path(checkpoint).resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(SCRIPT), "--server.port", str(port),
           "--browser.gatherUsageStats", "false"]
    return subprocess.call(cmd, env=env)


def _data(action: str, dataset: str | None) -> int:
    """The ``wbcstudy data`` actions."""
    from wbcstudy.data import construct, sources

    keys = [dataset] if dataset else list(sources.SOURCES)
    if action == "build":
        for name, path in construct.build_manifests().items():
            print(f"{name}: {path}")
    elif action == "sources":
        for key in keys:
            src = sources.SOURCES[key]
            print(f"{key}: {src.title}\n  {src.homepage}\n  licence: {src.licence}\n  cite: {src.citation}")
    elif action == "fetch":
        for key in keys:
            print(sources.fetch(key))
    elif action == "verify":
        problems = {key: sources.verify(key) for key in keys}
        for key, found in problems.items():
            print(f"{key}: {'ok' if not found else f'{len(found)} problem(s)'}")
            for line in found[:20]:
                print(f"  {line}")
        return 1 if any(problems.values()) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
