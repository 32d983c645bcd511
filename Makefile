# Set-up and everyday commands. Every target creates .venv and installs on first use.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# CPU wheel by default; on a GPU machine install a CUDA torch into .venv first (README) and it is kept.
TORCH ?= torch==2.13.0
OUT   ?= figures/demo

.PHONY: install demo test bench organism lint clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/probe-layers --out $(OUT)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.tga_step

organism: install
	$(PY) experiments/organism/build.py --seed 0 --out safety_probe/organism/weights

lint: install
	$(VENV)/bin/ruff check safety_probe tests experiments benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
