# The two commands a user needs: `make serve` and `make test`. Each creates .venv and
# installs what it needs on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MODELS ?= models
HOST ?= 0.0.0.0
PORT ?= 8501

.PHONY: serve test bench bench-quant bench-frameworks bench-deploy lint protos clean

$(BIN)/ferry: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

serve: $(BIN)/ferry
	$(BIN)/ferry examples $(MODELS)
	$(BIN)/ferry serve $(MODELS) --host $(HOST) --rest_api_port $(PORT)

test: $(BIN)/ferry
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(BIN)/ferry
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk)
	@command -v h2load >/dev/null || (echo "installing h2load (Debian package nghttp2-client)"; \
		apt-get install -y -qq nghttp2-client >/dev/null 2>&1 || \
		sudo apt-get install -y -qq nghttp2-client)
	$(BIN)/python benchmarks/run.py

# Quantization and lite models on load_digits (QUICK=1 for shorter timings); needs the
# test extras (TensorFlow/Keras, scikit-learn). Report: benchmarks/results/quantization.md
bench-quant: $(BIN)/ferry
	$(BIN)/python benchmarks/quantization.py $(if $(QUICK),--quick)

# mlp_small as a Keras SavedModel (TensorFlow runtime), the same with accelerate = "onnx",
# and as TorchScript (PyTorch), each in its own `ferry serve`, wrk at 1 and 64 connections
# (QUICK=1 for shorter runs); needs the test extras. Report: benchmarks/results/frameworks.md
bench-frameworks: $(BIN)/ferry
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/frameworks.py $(if $(QUICK),--quick)

# Deploy: cold start of mlp_large from S3 (moto's server) against a boto3 download plus
# the in-process load, and the c64 cost of `ferry serve --auth` (SigV4, bearer) on
# mlp_small (QUICK=1 for shorter runs); needs wrk and the test extras (moto[server]).
# Report: benchmarks/results/deploy.md
bench-deploy: $(BIN)/ferry
	@command -v wrk >/dev/null || (echo "installing wrk (Debian package)"; \
		apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/deploy.py $(if $(QUICK),--quick)

lint: $(BIN)/ferry
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src

# Regenerate the descriptor set after editing a .proto file (tests check it is current).
protos: $(BIN)/ferry
	$(BIN)/python -m ferry.protos.build

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache
