# The two commands a user needs: `make serve` and `make test`. Each creates .venv and
# installs what it needs on first use: `make serve` only ferry itself; `make test` (and the
# benchmarks) also the test tools and the frameworks the tests use (TensorFlow, PyTorch CPU,
# scikit-learn, the official clients; several GB, a few minutes the first time).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS ?= models
HOST ?= 0.0.0.0
PORT ?= 8501

.PHONY: fuzz serve test bench bench-quant bench-frameworks bench-deploy bench-cluster cluster-tools \
	perf-analyzer lint protos docs clean wheel wheel-check

# Debian packages the tests use (a browser, a load balancer, a load generator): installed
# as root or with sudo, refreshing the package lists once if they are stale. Never fatal:
# a test whose tool is missing says so.
APT_INSTALL = sh -c 'export DEBIAN_FRONTEND=noninteractive; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	$$sudo apt-get install -y -qq "$$@" >/dev/null 2>&1 || \
	{ $$sudo apt-get update -qq >/dev/null 2>&1 && $$sudo apt-get install -y -qq "$$@" >/dev/null 2>&1; } || \
	echo "could not install $$*; the tests that need it will say so"' apt-install

SERVE_STAMP := $(VENV)/.installed-serve
TEST_STAMP := $(VENV)/.installed-test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The distribution is ferry-serve (`ferry` on PyPI is another project); a checkout that
# installed it under the old name `ferry` drops that first, so one `ferry` command remains.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip uninstall --quiet --yes ferry >/dev/null 2>&1 || true
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@$(BIN)/python -m pip uninstall --quiet --yes ferry >/dev/null 2>&1 || true
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(SERVE_STAMP)

# The Rust data plane (rust/, `ferry serve --dataplane rust`; docs/dataplane.md) as the
# module ferry._dataplane, built where cargo is; without cargo ferry serves with its
# Python front and the tests of the Rust front say why they skip. Replaced by a rename,
# so servers running from the old file keep it.
DATAPLANE := src/ferry/_dataplane.abi3.so
CARGO_FLAGS := --quiet --manifest-path rust/Cargo.toml
$(DATAPLANE): rust/Cargo.toml rust/Cargo.lock $(shell find rust/src -name "*.rs")
	@if command -v cargo >/dev/null; then \
		echo "building the Rust data plane (cargo build --release; a minute or two the first time)"; \
		cargo build $(CARGO_FLAGS) --release --features extension-module && \
		cp rust/target/release/lib_dataplane.so $@.tmp && mv $@.tmp $@; \
	else echo "cargo not found: the Rust data plane is not built (--dataplane python serves)"; fi

serve: $(SERVE_STAMP) $(DATAPLANE)
	$(BIN)/ferry examples $(MODELS)
	$(BIN)/ferry serve $(MODELS) --host $(HOST) --rest_api_port $(PORT)

test: $(TEST_STAMP) cluster-tools $(DATAPLANE)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(echo "installing chromium and chromium-driver (Debian packages, for the status page test)"; \
		$(APT_INSTALL) chromium chromium-driver)
	$(BIN)/ruff check src tests benchmarks
	@if command -v cargo >/dev/null; then \
		cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings && cargo test $(CARGO_FLAGS); fi
	@if command -v cargo >/dev/null && cargo fmt --version >/dev/null 2>&1; then \
		cargo fmt --manifest-path rust/Cargo.toml --check; fi
	$(BIN)/python -m pytest -q

bench: $(TEST_STAMP)
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk)
	@command -v h2load >/dev/null || (echo "installing h2load (Debian package nghttp2-client)"; \
		apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || \
		sudo apt-get install -y -qq nghttp2-client)
	$(BIN)/python benchmarks/run.py

# perf_analyzer for tests/compat/test_perf_analyzer.py and `make bench`: where the host's
# glibc is older than its wheels' 2.38, a Debian trixie root in ~/.cache/ferry (debootstrap;
# needs root and the network, 1-3 min and 270 MB once). The tests and the benchmark build it
# on first use anyway; this builds it ahead.
perf-analyzer: $(TEST_STAMP)
	$(BIN)/python tests/support/perf_analyzer_root.py

# Quantization and lite models on load_digits (QUICK=1 for shorter timings); needs the
# test extras (TensorFlow/Keras, scikit-learn). Report: benchmarks/results/quantization.md
bench-quant: $(TEST_STAMP)
	$(BIN)/python benchmarks/quantization.py $(if $(QUICK),--quick)

# mlp_small as a Keras SavedModel (TensorFlow runtime), the same with accelerate = "onnx",
# and as TorchScript (PyTorch), each in its own `ferry serve`, wrk at 1 and 64 connections
# (QUICK=1 for shorter runs); needs the test extras. Report: benchmarks/results/frameworks.md
bench-frameworks: $(TEST_STAMP)
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/frameworks.py $(if $(QUICK),--quick)

# Deploy: cold start of mlp_large from S3 (moto's server) against a boto3 download plus
# the in-process load, and the c64 cost of `ferry serve --auth` (SigV4, bearer) on
# mlp_small (QUICK=1 for shorter runs); needs wrk and the test extras (moto[server]).
# Report: benchmarks/results/deploy.md
bench-deploy: $(TEST_STAMP)
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/deploy.py $(if $(QUICK),--quick)

# The cluster tests and benchmark (docs/cluster.md) need HAProxy and wrk (Debian packages);
# without root (no network namespaces) the tests skip, so a failed install is no error here.
cluster-tools:
	@command -v haproxy >/dev/null || (echo "installing haproxy (Debian package)"; \
		$(APT_INSTALL) haproxy)
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; $(APT_INSTALL) wrk)

# Three replicas in network namespaces behind HAProxy, sharing moto's S3 with SQS events:
# throughput at 1-3 replicas, failed requests on replica loss and rolling restarts, time
# for a new version to reach every replica (QUICK=1 for shorter runs); needs root.
# Report: benchmarks/results/cluster.md
bench-cluster: $(TEST_STAMP) cluster-tools
	$(BIN)/python benchmarks/cluster.py $(if $(QUICK),--quick)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src

# A bounded run of libFuzzer over the Rust front's parsers (rust/fuzz: the `:predict` row
# decoder against serde_json, the --auth check on arbitrary requests, the head scan on
# heads fed in pieces), FUZZ_SECONDS each,
# from the committed seeds. cargo-fuzz is installed from crates.io on first use; stable
# Rust serves (-s none: no sanitizer, which would need nightly). A crash fails the run
# and leaves its input in rust/fuzz/artifacts/.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := float_rows v2_inputs credentials heads
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
	cd rust && for target in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/corpus/$$target && \
		if ! cargo fuzz run --fuzz-dir fuzz -s none $$target fuzz/corpus/$$target \
			fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) > fuzz/$$target.log 2>&1; \
		then tail -40 fuzz/$$target.log; exit 1; fi; \
		echo "fuzz $$target: $$(grep -E '^Done' fuzz/$$target.log)"; done

# Regenerate the descriptor set after editing a .proto file (tests check it is current).
protos: $(TEST_STAMP)
	$(BIN)/python -m ferry.protos.build

# Regenerate the reference sections of docs/ (every verb and flag, HTTP endpoint and gRPC
# method) after changing a flag, a route or a proto (tests/test_generated_docs.py checks).
docs: $(SERVE_STAMP)
	$(BIN)/python docs/generate.py

# The wheel users install: built by maturin with the Rust front inside
# (dist/ferry_serve-VERSION-cp311-abi3-manylinux_*.whl, one wheel for CPython >= 3.11;
# maturin checks the manylinux policy itself). Without cargo, the pure-Python wheel
# (py3-none-any, the Python front only), and a line saying so.
wheel: $(SERVE_STAMP)
	rm -rf dist build
	@if command -v cargo >/dev/null; then \
		$(BIN)/python -m pip install --quiet "maturin>=1.5,<2" && \
		$(BIN)/maturin build --quiet --release --out dist; \
	else echo "cargo not found: building the pure-Python wheel (no Rust front)"; \
		$(BIN)/python -m pip install --quiet setuptools wheel && \
		$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w dist .; fi

# The wheel installs into a fresh venv and its `ferry --version` runs. Kept fast (a few
# seconds, no downloads): the venv gets the wheel with --no-deps and borrows the
# dependencies from .venv through a .pth line, which adds .venv's packages but not its
# editable ferry (that needs .venv's own .pth files, which a .pth line does not run).
WHEEL_VENV := .venv-wheel
wheel-check: wheel
	rm -rf $(WHEEL_VENV)
	$(BIN)/python -m venv --without-pip $(WHEEL_VENV)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > \
		"$$($(WHEEL_VENV)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/ferry-deps.pth"
	$(BIN)/python -m pip --python $(WHEEL_VENV)/bin/python install --quiet --no-deps dist/*.whl
	$(WHEEL_VENV)/bin/ferry --version
	cd / && $(CURDIR)/$(WHEEL_VENV)/bin/python -c 'import ferry, sys; \
		sys.exit(0 if ferry.__file__.startswith("$(CURDIR)/$(WHEEL_VENV)/") else \
		f"ferry imported from {ferry.__file__}, not the wheel")'
	@if command -v cargo >/dev/null; then cd / && $(CURDIR)/$(WHEEL_VENV)/bin/python -c \
		'import ferry._dataplane as d, sys; \
		ok = d.__file__.startswith("$(CURDIR)/$(WHEEL_VENV)/"); \
		print("the wheel carries the Rust front" if ok else \
		f"the Rust front imported from {d.__file__}, not the wheel"); sys.exit(0 if ok else 1)'; fi
	rm -rf $(WHEEL_VENV)

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache $(WHEEL_VENV) dist build rust/target rust/fuzz/target rust/fuzz/corpus $(DATAPLANE)
