# Two commands for a fresh machine: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default, so no CUDA packages are pulled on machines without a GPU. With a GPU, pip's
# default torch wheel (CUDA) is used. Override with TORCH_SPEC / TORCH_PIP_ARGS if you need another build.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
APT_PACKAGES := xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 \
	libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 \
	libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1
SUDO := $(shell [ "$$(id -u)" = "0" ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: demo test selftest install install-test system-deps lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed-all: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e ".[all]"
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e ".[test]"
	@touch $@ $(VENV)/.installed-all

install: $(VENV)/.installed-all
install-test: $(VENV)/.installed-test

# Xvfb and Mesa for headless napari (image layers need OpenGL); installed only when missing.
system-deps:
	@if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p 2>/dev/null | grep -q libGL.so.1 || ! ldconfig -p 2>/dev/null | grep -q libxcb-cursor; then \
		echo "installing Xvfb and Mesa with apt-get"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

demo: install system-deps
	@if [ -n "$$DISPLAY" ] || [ -n "$$WAYLAND_DISPLAY" ]; then \
		$(BIN)/napari-medai demo --gui; \
	else \
		echo "no display: running every tool on the sample data, writing demo_output/"; \
		xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/napari-medai demo --out demo_output; \
	fi
	@echo "to check every model and tool on this machine's CPU and GPUs: make selftest (napari-medai selftest)"

# Every model verified and loaded, every tool on its sample on the CPU and each GPU, with parity (exit 1 on failure).
selftest: install
	$(BIN)/napari-medai selftest

# ruff with the rules in pyproject.toml ([tool.ruff.lint]); part of `make test`, so CI fails on a finding
lint: install-test
	$(BIN)/ruff check src tests training benchmarks

test: install-test system-deps lint
	QT_API=pyqt5 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/pip install -q ".[bench]"
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) demo_output .pytest_cache build dist
