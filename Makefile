# Two commands: `make demo` and `make test`. Both set up what they need (venv, Debian packages) and skip what is there.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.a2llm-installed
DEB_PACKAGES := libzmq3-dev cppzmq-dev mono-mcs mono-runtime espeak-ng sox cmake g++ pkg-config chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NATIVE_BUILD := build/native
# Windows x64 build of the native core, cross-compiled with MinGW-w64 and tested under Wine (64-bit only).
# clang: the plugins' engine-free code is also compiled with clang at -Werror (tests/plugin_bridge/test_plugins.py).
WINDOWS_PACKAGES := g++-mingw-w64-x86-64-posix binutils-mingw-w64-x86-64 mingw-w64-x86-64-dev wine64 wine clang
NATIVE_WINDOWS_BUILD := build/native-windows
WINDOWS_DEPS := build/windows-deps
PAGE := plugin_bridge/web/page
PYTEST_ARGS ?=

.PHONY: help setup venv deb native native-windows plugins page test lint demo gpu-check gpu-wheels bench clean

help:
	@echo "make demo   - run the demo on the embedded tiny models, outputs in demo_out/"
	@echo "make test   - install everything needed, then run ruff and the whole test suite"
	@echo "make gpu-wheels - download the wheels the GPU check needs into .whl/ (where a package index is reachable)"
	@echo "make gpu-check - the GPU check on a lent GPU machine (offline; tools/gpu_check.sh, --dry-run on a CPU)"
	@echo "make bench  - CPU benchmarks (tables + JSON in bench/results/)"
	@echo "make native-windows - cross-compile the native core for Windows x64 (MinGW-w64; tests run under Wine)"
	@echo "make plugins - Unity package (.tgz) and Unreal plugin (.zip) with Linux and Windows natives in build/plugins/"

# --- setup -----------------------------------------------------------------------------------------------------------
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch is pinned to the build the Makefile installs: on a machine without CUDA `pip install torch==2.13.0` takes the
# CPU wheel; with CUDA it takes PyPI's CUDA build of the same version.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

deb:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: deb venv

native: setup
	@if [ -f plugin_bridge/native/CMakeLists.txt ]; then \
	  cmake -S plugin_bridge/native -B $(NATIVE_BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  cmake --build $(NATIVE_BUILD) -j2 >/dev/null; fi

# libzmq's Windows DLL comes from pyzmq's win_amd64 wheel (PyPI; pinned and hash-checked by fetch_libzmq.py).
native-windows: setup
	@missing=""; for p in $(WINDOWS_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	$(PY) plugin_bridge/native/windows/fetch_libzmq.py $(WINDOWS_DEPS)
	cmake -S plugin_bridge/native -B $(NATIVE_WINDOWS_BUILD) -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/plugin_bridge/native/windows/mingw-w64-x86_64.cmake \
	  -DA2LLM_ZMQ_DLL=$(CURDIR)/$(WINDOWS_DEPS)/bin/libzmq-v141-mt-4_3_4.dll \
	  -DA2LLM_ZMQ_INCLUDE_DIR=$(CURDIR)/$(WINDOWS_DEPS)/include -DA2LLM_ZMQ_DEF=$(CURDIR)/$(WINDOWS_DEPS)/lib/libzmq.def >/dev/null
	cmake --build $(NATIVE_WINDOWS_BUILD) -j2 >/dev/null
	@echo "$(NATIVE_WINDOWS_BUILD)/a2llm_client.dll (+ libzmq-v141-mt-4_3_4.dll, libsodium-*.dll)"

# The engine plugins with Linux and Windows natives: build/plugins/com.a2llm.bridge-<version>.tgz (Unity) and
# build/plugins/A2LLMBridge-<version>.zip (Unreal).
plugins: native native-windows
	$(PY) tools/package_plugins.py --out build/plugins

# The browser viewer's page (Vite + three.js from npm; Node >= 20.19 as on this machine kind).
page: setup
	@command -v npm >/dev/null || { echo "npm not found: the browser viewer and its tests need Node.js >= 20.19"; exit 0; }; \
	cd $(PAGE) && { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund --loglevel=error; } \
	  && npm run build --silent >/dev/null

# --- the two commands ------------------------------------------------------------------------------------------------
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check . >/dev/null || echo "note: ruff format would reformat some files"

test: setup native native-windows page lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup page
	$(PY) -m apps.demo --out demo_out

# --- measuring -------------------------------------------------------------------------------------------------------
bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --device cpu || exit 1; done

# The GPU check (tools/gpu_check.sh): on the lent GPU machine, which has python3 + torch but no package index, no apt
# and no venv. `make gpu-wheels` (here, with an index) puts the few wheels it lacks into .whl/ (git-ignored; they travel
# with the working tree); `make gpu-check` installs them with pip --no-index --target into a temporary folder and runs
# the parts (CPU smoke, gpu-marked tests, full-size engine bench, motion stack, profiler trace) in under 8 minutes.
# `tools/gpu_check.sh --dry-run` is the CPU rehearsal (run by tests/engine/test_gpu_check.py in `make test`).
gpu-wheels:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/gpu_wheels.py download --wheel-dir .whl
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) tools/gpu_wheels.py check --wheel-dir .whl

gpu-check:
	bash tools/gpu_check.sh

clean:
	rm -rf build demo_out bench/results .pytest_cache
