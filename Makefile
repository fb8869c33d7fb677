# The study's two commands do their own set-up: `make book` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export WBCSTUDY_DATA ?= $(CURDIR)/data/raw

.PHONY: venv book book-html test regression app clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[book,test,app]"
	touch $@

## Run every chapter with the cpu profile, then build the HTML book into build/_build/html
book: venv
	$(BIN)/wbcstudy book --profile cpu

## Build the HTML book from the committed executed chapters (no training)
book-html: venv
	$(BIN)/wbcstudy book --build-only

## Unit tests, the smoke regression notebooks under nbval, and the book build (warnings as errors)
test: venv
	$(BIN)/python -m pytest tests --nbval --nbval-current-env --nbval-sanitize-with tests/regression/sanitize.cfg -p no:cacheprovider

## Re-execute every chapter at the smoke profile into tests/regression/
regression: venv
	$(BIN)/wbcstudy regression

## Start the trustworthiness chapter's Streamlit app (needs build/trust/app_model.pt: `wbcstudy run trust` writes it)
app: venv
	$(BIN)/wbcstudy app

clean:
	rm -rf build data/cache
