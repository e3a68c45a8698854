# psyserve front door: `make install serve` then `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# PsychoPy pins and pulls in much (GUI toolkits, its own numpy stack): it gets its own venv, used by the
# PsychoPy tests as subprocesses (tests/test_psychopy.py) while the server runs from $(VENV).
PPVENV ?= .venv-psychopy
PPSTAMP := $(PPVENV)/.installed
PORT ?= 50051
DB ?= psyserve.db
HOST ?= 127.0.0.1

.PHONY: install serve test test-fast lint buf-lint protos protos-check bench clean

install: $(STAMP) $(PPSTAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml clients/psychopy/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e clients/python -e clients/psychopy -e '.[dev]'
	touch $(STAMP)

$(PPSTAMP): clients/psychopy/requirements-psychopy.txt clients/psychopy/pyproject.toml clients/python/pyproject.toml
	test -x $(PPVENV)/bin/python || python3 -m venv $(PPVENV)
	$(PPVENV)/bin/python -m pip install -q --upgrade pip
	$(PPVENV)/bin/python -m pip install -q --no-deps psychopy-lib==2026.2.5
	$(PPVENV)/bin/python -m pip install -q -r clients/psychopy/requirements-psychopy.txt -e clients/python -e clients/psychopy
	touch $(PPSTAMP)

serve: $(STAMP)
	$(VENV)/bin/psyserve serve --host $(HOST) --port $(PORT) --db $(DB)

test: $(STAMP) $(PPSTAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP) $(PPSTAMP)
	$(PY) -m pytest -q -m "not slow"

protos: $(STAMP)
	$(PY) scripts/gen_protos.py
	$(PY) scripts/gen_csharp.py

protos-check: protos
	git diff --exit-code -- clients/python/psyserve_client/_proto clients/unity/com.psyserve.client/Runtime/Messages.g.cs && test -z "$$(git status --porcelain -- clients/python/psyserve_client/_proto clients/unity/com.psyserve.client/Runtime/Messages.g.cs)" || (echo "generated code is stale: run 'make protos' and commit" && exit 1)

lint: $(STAMP)
	$(VENV)/bin/ruff check server clients/python clients/psychopy examples tests benchmarks scripts
	$(VENV)/bin/mypy

# proto style (STANDARD rules) with buf from the npm registry
buf-lint:
	npx --yes @bufbuild/buf@1.75.0 lint

bench: $(STAMP)
	$(PY) benchmarks/rpc.py
	$(PY) benchmarks/http_rpc.py
	$(PY) benchmarks/journal.py
	cd benchmarks && ../$(PY) sweep.py && ../$(PY) sweep.py --series 100
	$(PY) benchmarks/restart.py --with-models
	$(PY) benchmarks/compute.py
	cd benchmarks && ../$(PY) psychophysics.py --seeds 3 --response-times 0.5 0
	cd benchmarks && ../$(PY) psychophysics.py --problems novel_detection --participants 1 4 16 --response-times 1 --seeds 3
	$(PY) benchmarks/compute.py --problem preference_2d --seeds 2 --trials 30
	cd benchmarks && ../$(PY) preference.py --seeds 3 --response-times 0.5 0
	cd benchmarks && ../$(PY) dashboard.py --rounds 2

clean:
	rm -rf $(VENV) $(PPVENV) .pytest_cache .mypy_cache .ruff_cache
