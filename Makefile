# The two commands of the README, and a few more. The real build is CMake; this file only strings
# the steps together so that a fresh Debian machine needs nothing but `make run` / `make test`.

JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
DB    ?= ./shroud.db
LISTEN ?= 127.0.0.1:1080

RELEASE := build/release
TEST    := build/test

.PHONY: run test build bench deps-run deps-test deps-bench clean

run: deps-run build
	@# The schema comes from pool.db.sql, compiled into the binary: serve creates $(DB) if absent.
	exec $(RELEASE)/shroud serve --db $(DB) --listen $(LISTEN)

build:
	cmake -S . -B $(RELEASE) -DCMAKE_BUILD_TYPE=Release -DSHROUD_TESTS=OFF
	cmake --build $(RELEASE) -j$(JOBS)

# The sanitizer build (ASan+UBSan) with clang, so the libFuzzer targets build in the same tree,
# and a warnings-as-errors gcc build of the release configuration; then every test through ctest.
test: deps-test build
	CC=clang cmake -S . -B $(TEST) -DCMAKE_BUILD_TYPE=Debug -DSHROUD_SANITIZE=ON -DSHROUD_FUZZ=ON
	cmake --build $(TEST) -j$(JOBS)
	cd $(TEST) && ctest --output-on-failure --timeout 600

# Benchmarks are never part of `make test`: numbers on a shared machine are for reading, not asserting.
# No proxy (the ceiling), shroud and every installed peer, interleaved, pinned; ~5 minutes on two
# cores, QUICK=1 for a one-minute smoke run. tests/bench/authrate.sh (password or not) runs alone.
bench: deps-bench build
	tests/bench/run.sh $(RELEASE)

deps-run:
	@scripts/deps.sh run
deps-test:
	@scripts/deps.sh test
deps-bench:
	@scripts/deps.sh bench

clean:
	rm -rf build
