"""The built book as a reader's browser sees it: every page loads in headless Chromium, every image decodes, no console errors."""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports what matters
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):  # the browser closed a page while a file was still being sent
            pass


def _pages(html: Path) -> list[str]:
    skip = {"_static", "_sources", "_images"}
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html") if not skip & set(p.relative_to(html).parts))


@pytest.fixture(scope="module")
def served_book(built_book):
    """The built book served on 127.0.0.1 (a file:// page cannot load the search index)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(built_book)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _pages(built_book)
    server.shutdown()


def test_every_page_loads_with_its_images_and_no_console_errors(served_book):
    if not Path(CHROMIUM).is_file():
        if os.environ.get("WBCSTUDY_SKIP_BROWSER") == "1":
            pytest.skip("WBCSTUDY_SKIP_BROWSER=1")
        pytest.fail(f"no Chromium at {CHROMIUM}: `make venv` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    base, pages = served_book
    assert {"index.html", "book/intro.html", "book/chapters/baseline.html"} <= set(pages)
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        for rel in pages:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"script error: {e}"))
            page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            response = page.goto(f"{base}/{rel}", wait_until="load")
            if response is None or response.status != 200:
                errors.append(f"page did not load ({response.status if response else 'no response'})")
            page.wait_for_load_state("networkidle")  # index.html redirects to the introduction
            broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            errors += [f"image does not decode: {src}" for src in broken]
            problems += [f"{rel}: {e}" for e in errors]
            page.close()
        browser.close()
    assert not problems, "\n".join(problems)
