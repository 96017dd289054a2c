# Two commands for a newcomer: `make demo` (set up + the main job) and `make test` (set up + tests).
PY := .venv/bin/python
STAMP := .venv/.installed
SHARED ?= ../shared
# When this make began: `make demo`'s 15-minute budget counts from here, so set-up is inside it.
STARTED := $(shell date +%s.%N)

.PHONY: setup demo test lint fmt bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	@# Java runs the METEOR and PTB-tokenizer parts of pycocoevalcap; without it the caption metrics
	@# fall back to a pure-Python scorer (with a warning).
	@command -v java >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null) || \
	  echo "note: no Java; caption metrics will use the Java-free fallback"; }
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m lib.demo --started_at $(STARTED) $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _snapshot .pytest_cache .ruff_cache
