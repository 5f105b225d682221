# canaryd — the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
CONFIG ?= config/demo.yaml
SANITIZE ?=
BUILD_TYPE ?= Release
ifeq ($(SANITIZE),)
BUILD_DIR ?= build
else
BUILD_DIR ?= build-$(subst $(comma),-,$(SANITIZE))
endif
comma := ,
JOBS ?= $(shell nproc)
ifeq ($(SANITIZE),thread)
# ThreadSanitizer: the concurrency-heavy suites (the threaded unit tests and
# every suite that drives the real multi-threaded daemon), built alone.
BUILD_TARGETS ?= canaryd mock-upstream rollout_test metrics_test memory_store_test redis_test
CTEST_ARGS ?= -L 'concurrency|integration|faults|rollout|e2e'
endif
BUILD_TARGETS ?=
CTEST_ARGS ?=

.PHONY: all deps build test run bench fuzz docker-test e2e-deps clean help format format-check lint

all: build

help:
	@echo "make run [CONFIG=config/canaryd.yaml]   build and start canaryd (demo: with two mock upstreams)"
	@echo "make test [SANITIZE=address,undefined]  build and run every test suite through ctest"
	@echo "make build | bench [QUICK=1] [ONLY=pins] | fuzz [FUZZ_SECONDS=60] | docker-test | clean"

deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -G Ninja -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCANARYD_SANITIZE=$(SANITIZE)

build: deps $(BUILD_DIR)/build.ninja
	ninja -C $(BUILD_DIR) -j $(JOBS) $(BUILD_TARGETS)

# npm ci when node_modules is missing or older than its lockfile (a changed pin).
NPM_DIRS := tests/e2e deploy/validate tests/browser
e2e-deps:
	@command -v npm >/dev/null || { echo "make: npm not found: run scripts/install-deps.sh (Debian's nodejs and npm)" >&2; exit 1; }
	@set -e; for d in $(NPM_DIRS); do \
	  if [ ! -f $$d/node_modules/.package-lock.json ] || [ $$d/package-lock.json -nt $$d/node_modules/.package-lock.json ]; then \
	    npm ci --prefix $$d --no-audit --no-fund --loglevel=error; fi; done

# Under the sanitizers any report fails the test that caused it: UBSan stops the
# process instead of printing and going on, and the suites check exit codes.
SAN_ENV := UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

test: build e2e-deps
	cd $(BUILD_DIR) && $(if $(SANITIZE),$(SAN_ENV) )ctest --output-on-failure --timeout 600 -j 2 $(CTEST_ARGS)

run: build
	@scripts/run.sh $(BUILD_DIR) $(CONFIG)

bench: BUILD_DIR := build
bench:
	@scripts/install-deps.sh --bench
	@$(MAKE) --no-print-directory build BUILD_DIR=build
	@bench/run.sh $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

docker-test: build
	CANARYD_DOCKER_MAKE_BASE=1 scripts/docker-test.sh --build-dir $(BUILD_DIR) --full

FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := request_head request_target sse_scanner response json_scan config_load
fuzz:
	@command -v clang++-14 >/dev/null || apt-get install -y -qq clang-14 libclang-rt-14-dev >/dev/null
	CXX=clang++-14 cmake -G Ninja -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCANARYD_FUZZ=ON \
	  -DCANARYD_SANITIZE=address,undefined -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link
	ninja -C build-fuzz -j $(JOBS) $(addprefix fuzz_,$(FUZZ_HARNESSES))
	set -e; for h in $(FUZZ_HARNESSES); do mkdir -p build-fuzz/corpus/$$h; \
	  build-fuzz/tests/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    build-fuzz/corpus/$$h tests/fuzz/corpus/$$h; done

# Formatting and lint (docs/architecture.md "Habits"). The sources under src/,
# tests/ and tools/ (C++ only; the fuzz corpora and generated files are not).
FORMAT_FILES = $(shell git ls-files 'src/*.cpp' 'src/*.hpp' 'tests/*.cpp' 'tests/*.hpp' 'tools/*.cpp' 'tools/*.hpp' 'include/*.hpp')
CLANG_FORMAT ?= $(shell command -v clang-format-14 || command -v clang-format)
format:
	@test -n "$(CLANG_FORMAT)" || { echo "make format: clang-format not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
	$(CLANG_FORMAT) -i $(FORMAT_FILES)

format-check:
	@test -n "$(CLANG_FORMAT)" || { echo "make format-check: clang-format not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
	@$(CLANG_FORMAT) --dry-run -Werror $(FORMAT_FILES) || { echo "formatting differs from .clang-format: run make format" >&2; exit 1; }

CLANG_TIDY ?= $(shell command -v clang-tidy-14 || command -v clang-tidy)
lint: $(BUILD_DIR)/build.ninja
	@test -n "$(CLANG_TIDY)" || { echo "make lint: clang-tidy not found (apt-get install clang-tidy)" >&2; exit 1; }
	$(CLANG_TIDY) -p $(BUILD_DIR) --quiet $(shell git ls-files 'src/*.cpp')

clean:
	rm -rf build build-*
