"""The built book as a reader's browser sees it at 1,400 px: every page loads in headless Chromium, every image decodes,
no console errors, no visible stderr block, no path of the machine it was made on, no table wider than the page column.

The planted tests prove the last three checks fail: each copies a built chapter page and plants one problem in it."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

from wbcstudy.publish import LOCAL_PATH, TEXT_MIME


def _find_chromium() -> str:
    """``WBCSTUDY_CHROMIUM``, else the first Chromium or Chrome on the PATH (Debian's ``chromium``, a CI runner's
    ``google-chrome``), else Debian's place for it."""
    if os.environ.get("WBCSTUDY_CHROMIUM"):
        return os.environ["WBCSTUDY_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return "/usr/bin/chromium"


CHROMIUM = _find_chromium()
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
#: The window the book is read in (the issue's width; the page column is then 784 px).
VIEWPORT = {"width": 1400, "height": 900}

#: In the loaded page: (a) a stderr output block a reader sees (folded ones are a choice); (b) a machine path anywhere
#: in the page's text, folded code included (``LOCAL_PATH``, passed in); (c) then, with every fold opened, a table wider
#: than the article's text column (a wider table is cut off behind a scroll bar).
PAGE_CHECKS = """(pattern) => {
  const problems = [];
  for (const el of document.querySelectorAll('div.output.stderr, div.stderr')) {
    if (el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden') {
      problems.push('visible stderr output: ' + el.textContent.trim().slice(0, 120));
    }
  }
  const body = document.body.cloneNode(true);
  body.querySelectorAll('script, style, noscript').forEach(e => e.remove());
  for (const m of body.textContent.matchAll(new RegExp(pattern, 'g'))) {
    problems.push('local path: ' + m[0]);
  }
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  const article = document.querySelector('article.bd-article');
  if (article) {
    const cs = getComputedStyle(article);
    const column = article.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    for (const t of article.querySelectorAll('table')) {
      const width = Math.max(t.scrollWidth, t.getBoundingClientRect().width);
      if (width > column + 1) {
        problems.push(`table ${Math.round(width)} px wide in a ${Math.round(column)}-px page column: `
                      + t.textContent.trim().replace(/\\s+/g, ' ').slice(0, 80));
      }
    }
  }
  return problems;
}"""


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


def _serve(directory: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_QuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def served_book(built_book):
    """The built book served on 127.0.0.1 (a file:// page cannot load the search index)."""
    server, base = _serve(built_book)
    yield base, _pages(built_book)
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright (``make venv`` installs Debian's chromium)."""
    if not Path(CHROMIUM).is_file():
        if os.environ.get("WBCSTUDY_SKIP_BROWSER") == "1":
            pytest.skip("WBCSTUDY_SKIP_BROWSER=1")
        pytest.fail(f"no Chromium at {CHROMIUM}: `make venv` installs Debian's chromium (apt-get install chromium), "
                    "or set WBCSTUDY_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def page_problems(browser, url: str) -> list[str]:
    """Everything a reader would see wrong on one page: load and console errors, broken images, then ``PAGE_CHECKS``."""
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"script error: {e}"))
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    response = page.goto(url, wait_until="load")
    if response is None or response.status != 200:
        errors.append(f"page did not load ({response.status if response else 'no response'})")
    page.wait_for_load_state("networkidle")  # index.html redirects to the introduction
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => "
                           "i.src)")
    errors += [f"image does not decode: {src}" for src in broken]
    errors += page.evaluate(PAGE_CHECKS, LOCAL_PATH.pattern)
    page.close()
    return errors


def test_every_page_loads_and_shows_no_machinery(served_book, browser):
    base, pages = served_book
    assert {"index.html", "book/intro.html", "book/chapters/baseline.html"} <= set(pages)
    problems = [f"{rel}: {e}" for rel in pages for e in page_problems(browser, f"{base}/{rel}")]
    assert not problems, "\n".join(problems)


def _published_text(path: Path) -> str:
    """The text a file of the built site publishes: a notebook's sources and text outputs (not its base64 images, where
    "/tmp/" may occur by chance), any other file whole."""
    if path.suffix != ".ipynb":
        return path.read_text(errors="replace")
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb.get("cells", []):
        parts.append("".join(cell.get("source", "")))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", "")))
            parts += ["".join((output.get("data") or {}).get(m, "")) for m in TEXT_MIME]
            parts += output.get("traceback", [])
    return "\n".join(parts)


def test_no_machine_path_in_what_the_site_publishes(built_book):
    """The page sources and the notebooks behind the download button (``_sources``), not only the rendered text."""
    files = [p for p in built_book.rglob("*") if p.is_file() and p.suffix in {".html", ".ipynb", ".md", ".txt", ".js"}
             and "_static" not in p.relative_to(built_book).parts]
    found = []
    for path in files:
        text = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", _published_text(path))
        found += [f"{path.relative_to(built_book)}: {m.group(0)}" for m in LOCAL_PATH.finditer(text)]
    assert any(p.suffix == ".ipynb" for p in files), "no notebook under _sources: is html_copy_source off?"
    assert not found, "\n".join(found[:40])


#: One problem each, planted before the end of a built chapter's article (the markup is myst-nb's own for a stderr
#: stream); the key is what its report must start with.
PLANTS: dict[str, tuple[str, str]] = {
    "stderr": ("visible stderr output", '<div class="cell_output docutils container"><div class="output stderr '
               'highlight-myst-ansi notranslate"><div class="highlight"><pre><span></span>UserWarning: a planted '
               'warning</pre></div></div></div>'),
    "path": ("local path", "<p>wnet: loaded from /tmp/wt-planted/build/models/cpu/wnet.pt (trained in 27 s)</p>"),
    "wide-table": ("table",
                   '<table class="table"><tr>' + "".join(f"<td>column_{i:02d}_without_a_break</td>" for i in range(12))
                   + "</tr></table>"),
    "clean": ("", ""),
}


@pytest.fixture(scope="module")
def planted_site(built_book, tmp_path_factory):
    """A site beside the built book (its folders linked) whose book/chapters/planted-<kind>.html are copies of the
    baseline chapter, each with one planted problem."""
    site = tmp_path_factory.mktemp("planted")
    for entry in built_book.iterdir():
        if entry.name != "book":
            (site / entry.name).symlink_to(entry)
    chapters = site / "book" / "chapters"
    chapters.mkdir(parents=True)
    page = (built_book / "book" / "chapters" / "baseline.html").read_text()
    assert page.count("</article>") == 1
    for kind, (_, snippet) in PLANTS.items():
        (chapters / f"planted-{kind}.html").write_text(page.replace("</article>", snippet + "</article>"))
    server, base = _serve(site)
    yield base
    server.shutdown()


@pytest.mark.parametrize("kind", list(PLANTS))
def test_the_check_fails_on_a_planted_problem(planted_site, browser, kind):
    expected, _ = PLANTS[kind]
    problems = page_problems(browser, f"{planted_site}/book/chapters/planted-{kind}.html")
    if not expected:
        assert problems == []  # the real page passes: what the others find is what was planted
    else:
        assert problems and all(p.startswith(expected) for p in problems), problems
