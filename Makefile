# The study's two commands do their own set-up: `make book` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export WBCSTUDY_DATA ?= $(CURDIR)/data/raw

.PHONY: venv book book-html test unit lint regression app lab clean

venv: $(VENV)/.installed

# Python packages at the exact versions of requirements/constraints.txt (pyproject.toml keeps ranges for Colab);
# Debian's chromium for the browser check of the built book (skipped with a message where apt-get is not ours to run)
$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install Debian's chromium: the browser check in make test will fail until it is installed"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e ".[book,test,app]"
	touch $@

## Run every chapter with the cpu profile, then build the HTML book into build/_build/html
book: venv
	$(BIN)/wbcstudy book --profile cpu

## Build the HTML book from the committed executed chapters (no training)
book-html: venv
	$(BIN)/wbcstudy book --build-only

## ruff, then unit tests, the smoke regression notebooks under nbval and the book build (warnings as errors), then `wbcstudy check`
test: venv lint
	$(BIN)/python -m pytest tests --nbval --nbval-current-env --nbval-sanitize-with tests/regression/sanitize.cfg -p no:cacheprovider
	$(BIN)/python -m wbcstudy.check

## The unit tests alone (CI runs them once more with each precision forced: nothing may depend on the CPU's precision;
## the chapters' tiny paper-profile runs are left to `make test`)
unit: venv
	$(BIN)/python -m pytest tests --ignore=tests/regression --ignore=tests/test_book.py --ignore=tests/test_browser.py --ignore=tests/test_paper_profile.py -p no:cacheprovider -q

## ruff over the package, the tests and the MyST chapters' code cells (converted to .ipynb with jupytext)
lint: venv
	rm -rf build/lint && mkdir -p build/lint
	for f in notebooks/*.md; do $(BIN)/jupytext --quiet --to ipynb --output build/lint/$$(basename $$f .md).ipynb $$f; done
	$(BIN)/ruff check wbcstudy tests build/lint/*.ipynb

## Re-execute every chapter at the smoke profile into tests/regression/
regression: venv
	$(BIN)/wbcstudy regression

## Start the trustworthiness chapter's Streamlit app (needs build/trust/app_model.pt: `wbcstudy run trust` writes it)
app: venv
	$(BIN)/wbcstudy app

## Open the MyST chapters as notebooks in JupyterLab (jupytext)
lab: venv
	$(BIN)/pip install --quiet -c requirements/constraints.txt -e ".[lab]"
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf build data/cache

.PHONY: browser-check publish

## The browser check of the book `make book-html` built: every page in headless Chromium at 1,400 px (load and console
## errors, images, a visible stderr block, a machine path, a table wider than the page); the planted tests prove it fails
browser-check: venv
	WBCSTUDY_BOOK_HTML=build/_build/html $(BIN)/python -m pytest tests/test_browser.py -p no:cacheprovider -q

## Build, check and push the book to the gh-pages branch by hand (ghp-import); CI deploys it with .github/workflows/book.yml
publish: book-html browser-check
	$(BIN)/ghp-import --no-jekyll --push --force --message "book from $$(git rev-parse --short HEAD)" build/_build/html
