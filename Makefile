# StarKV — `make demo` and `make test` work on a fresh clone (they install what is missing).
SHELL := /bin/bash
.DEFAULT_GOAL := build

SWIFT        ?= swift
SWIFT_FLAGS  ?=
CONFIG       ?= release
BIN           = .build/$(CONFIG)/starkv
APT_PACKAGES  = libzstd-dev libprotobuf-c-dev protobuf-c-compiler pkg-config zstd chromium time
SAMPLE_TRACE  = traces/sample-1280x720.starkv
DEMO_OUT      = out/demo
PYTHON       ?= python3
VENV          = .venv
PY            = $(VENV)/bin/python

.PHONY: deps build test test-swift test-python demo proto proto-check bench traces traces-full clean python-deps fuzz fuzz-build fuzz-seeds validate-sweep

# ---- set-up ---------------------------------------------------------------------------
# Installs the Debian packages the build needs, only when one is missing.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build -c $(CONFIG) $(SWIFT_FLAGS) --product starkv

# ---- tests ----------------------------------------------------------------------------
test: deps proto-check test-swift test-python

test-swift: deps
	$(SWIFT) build -c $(CONFIG) $(SWIFT_FLAGS) --product starkv
	STARKV_BIN=$(abspath $(BIN)) $(SWIFT) test $(SWIFT_FLAGS) --parallel 2>&1 | tee .build/swift-test.log; exit $${PIPESTATUS[0]}

# Python recorder tests (python/tests): unit tests, a tiny random-weight Qwen2.5-VL end to end, and
# interop with the Swift CLI (built here when missing; STARKV_BIN points the tests at it).
test-python: python-deps
	@if [ -f python/pyproject.toml ]; then \
	  [ -x $(BIN) ] || $(SWIFT) build -c $(CONFIG) $(SWIFT_FLAGS) --product starkv; \
	  STARKV_BIN=$(abspath $(BIN)) $(PY) -m pytest -q python/tests; \
	else echo "python recorder: not present yet"; fi

# Creates .venv when missing and installs the recorder with its test extras from PyPI
# (numpy, zstandard, protobuf, crc32c, pandas, torch, torchvision, transformers, pillow, pytest, ray).
python-deps:
	@if [ -f python/pyproject.toml ]; then \
	  [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); \
	  $(PY) -m pip install -q --upgrade pip >/dev/null; \
	  $(PY) -m pip install -q -e 'python[test]'; \
	fi

# ---- protobuf -------------------------------------------------------------------------
# Regenerates the committed protobuf-c code (and the Python module, when python/ exists).
proto: deps
	protoc-c --c_out=Sources/CStarKVProto -Ischemas schemas/trace.proto
	mv Sources/CStarKVProto/trace.pb-c.h Sources/CStarKVProto/include/trace.pb-c.h
	@if [ -x scripts/gen-python-proto.sh ]; then scripts/gen-python-proto.sh; fi

# Fails when the committed generated code differs from what protoc-c writes now.
proto-check: deps
	@tmp=$$(mktemp -d); protoc-c --c_out=$$tmp -Ischemas schemas/trace.proto; \
	if cmp -s $$tmp/trace.pb-c.c Sources/CStarKVProto/trace.pb-c.c && \
	   cmp -s $$tmp/trace.pb-c.h Sources/CStarKVProto/include/trace.pb-c.h; then \
	  echo "proto-check: generated protobuf-c code is up to date"; rm -rf $$tmp; \
	else echo "proto-check: Sources/CStarKVProto is stale; run 'make proto' and commit" >&2; rm -rf $$tmp; exit 1; fi

# ---- demo, traces, benchmarks ---------------------------------------------------------
# Replays the shipped sample trace under every policy at 10/20/40/100 % and writes the report
# to out/demo/report.html; then prints the paper's memory scenario (7B, 4K screenshots, STaR-KV
# 28-head cache at 100 % vs 20 %) from the memory simulator alone.
demo: build
	$(BIN) inspect $(SAMPLE_TRACE)
	$(BIN) replay $(SAMPLE_TRACE) --policies all --budgets 10,20,40,100 --out $(DEMO_OUT) --force
	$(BIN) memory --model qwen2.5-vl-7b --screen 3840x2160 --screenshots 1..5 --attn flash --kv-heads 28 --gpu h100-80gb
	$(BIN) memory --model qwen2.5-vl-7b --screen 3840x2160 --screenshots 1..5 --attn flash --kv-heads 28 --budget 20 --gpu h100-80gb
	$(BIN) memory --model qwen2.5-vl-7b --screen 3840x2160 --screenshots 1..5 --attn flash --kv-heads 28 --budget 20,100 --gpu h100-80gb \
	  --html $(DEMO_OUT)/memory.html --memory-snapshot $(DEMO_OUT)/memory-snapshot.pickle > /dev/null
	@echo "demo report: $(DEMO_OUT)/report.html; paper scenario: $(DEMO_OUT)/memory.html (allocator history for pytorch.org/memory_viz: $(DEMO_OUT)/memory-snapshot.pickle)"

# Regenerates the shipped sample (tiny-vl, 1280x720, 6 steps, 2 image slots, standard fields,
# windows 8 and 32; about 6 MB). Same flags and seed → byte-identical file.
traces: build
	mkdir -p traces
	$(BIN) record synth --out $(SAMPLE_TRACE) --model tiny-vl --screen 1280x720 --steps 6 \
	  --image-slots 2 --fields standard --window-sizes 8,16,32,64 --zstd-level 19 --seed 1 --quiet --force

# The realistic trajectory: Qwen2.5-VL-7B, 1920x1080, 10 steps, 5 screenshots (about 1.1 GB,
# under a minute on one core); gitignored.
traces-full: build
	mkdir -p traces/generated
	$(BIN) record synth --out traces/generated/qwen2.5-vl-7b-1920x1080-10step.starkv --model qwen2.5-vl-7b \
	  --screen 1920x1080 --steps 10 --image-slots 5 --fields standard --seed 1 --force
	$(BIN) inspect traces/generated/qwen2.5-vl-7b-1920x1080-10step.starkv

# Benchmarks (figures and commands in benchmarks/*/README.md and README.md).
bench: build python-deps
	benchmarks/allocator/run.sh $(BIN)
	$(PY) benchmarks/recorder/bench_recorder.py --reps 5 --new-tokens 16 --side 448 --layers 4 --threads 1
	benchmarks/replay/run.sh $(BIN) $(PY)
	benchmarks/sweep/run.sh $(BIN) $(PY)

# ---- fuzzing ---------------------------------------------------------------------------
# libFuzzer over the trace reader (Sources/starkv-fuzz, README "Fuzzing"): open from bytes, header,
# every step, every chunk decode, validate, recover; each input is read as is and with its CRCs
# repaired (STARKV_FUZZ_REPAIR=0|1|both). Default 10 minutes: `make fuzz FUZZ_SECONDS=1800`.
# New corpus entries go to out/fuzz/corpus; a crash input lands in out/fuzz/artifacts: copy it
# into Fuzz/regressions/ (FuzzRegressionTests replays it in `make test`, unsanitized).
FUZZ_SECONDS ?= 600
FUZZ_SCRATCH  = .build/fuzz
FUZZ_FLAGS    = -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld -Xswiftc -DSTARKV_FUZZ \
                -Xcc -fsanitize=fuzzer-no-link,address

fuzz-build: deps
	$(SWIFT) build -c release --product starkv-fuzz --scratch-path $(FUZZ_SCRATCH) $(FUZZ_FLAGS)

fuzz: fuzz-build
	mkdir -p out/fuzz/corpus out/fuzz/artifacts
	STARKV_FUZZ_WORKDIR=$$( [ -w /dev/shm ] && echo /dev/shm || echo /tmp ) \
	  $(FUZZ_SCRATCH)/release/starkv-fuzz -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=20 \
	  -print_final_stats=1 -artifact_prefix=out/fuzz/artifacts/ out/fuzz/corpus Fuzz/corpus 2>&1 | tee out/fuzz/fuzz.log; \
	  status=$${PIPESTATUS[0]}; ls out/fuzz/artifacts; exit $$status

# Rewrites the seed corpus (Fuzz/corpus) with the fuzz target's --make-seeds mode.
fuzz-seeds:
	$(SWIFT) build -c $(CONFIG) --product starkv-fuzz
	.build/$(CONFIG)/starkv-fuzz --make-seeds Fuzz/corpus

clean:
	rm -rf .build out
