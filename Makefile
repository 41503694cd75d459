# graphode: two commands do everything on a fresh machine.
#   make test   set up .venv (torch CPU wheel, triton, graphode + _C) and run the tests
#   make run    the main job: train GRAND-l on the Cora copy shipped in the package
# Every target is idempotent and fast when nothing changed (stamp files in .venv/).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=
CSRC := $(shell find csrc -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) 2>/dev/null)

.PHONY: all install test test-all run bench bench-smoke bench-scale bench-dist bench-gpu bench-readme docs docs-check bench-quick cmake-test clean distclean

all: install

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU wheel that lies on disk here; an unpinned torch
# would pull a multi-GB CUDA build.
$(VENV)/.deps: pyproject.toml | $(PY)
	$(PIP) install -q "setuptools>=64" wheel
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q "triton>=3.0" "numpy>=1.22" "scipy>=1.9" "tqdm>=4.60" "pyyaml>=6.0" \
	    "pytest>=7" "pytest-benchmark>=4" torchdiffeq==0.2.5 "torchode>=1.0" "matplotlib>=3.5" ninja "torch-geometric>=2.4" "ray[tune]>=2.9" "scikit-learn>=1.1" "pymetis>=2023.1"
	touch $@

# Editable install; builds graphode._C against the torch in the venv.
$(VENV)/.built: $(VENV)/.deps setup.py $(CSRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.built

test: install
	$(PY) -m pytest tests -q -m "not slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

run: install
	$(PY) -m graphode run

# The benchmark suite (bench/README.md): graphode next to its strongest peers, correctness
# checked first; saves pytest-benchmark JSON under .benchmarks/ (compared with the previous
# saved run when there is one) and the raw results as bench/results/*.json, from which
# `make docs` regenerates the tables of bench/README.md and docs/RESULTS.md.
# BENCH_FILES picks files (default: the whole bench/ directory, e.g.
# BENCH_FILES=bench/test_bench_spmm.py); BENCH_ARGS passes pytest options (e.g. BENCH_ARGS="-k 100k").
BENCH_FILES ?= bench
BENCH_ARGS ?=
BENCH_PYTEST = $(PY) -m pytest -p no:cacheprovider -o addopts= --benchmark-columns=min,median,rounds \
	--benchmark-group-by=group --benchmark-sort=name --durations=10
bench: install
	$(BENCH_PYTEST) $(BENCH_FILES) -q --benchmark-only --benchmark-autosave \
	    $(if $(wildcard .benchmarks/*/*.json),--benchmark-compare) $(BENCH_ARGS)

# Every bench file at its smallest size, timed (seconds; results in /tmp, nothing saved).
bench-smoke: install
	GRAPHODE_BENCH_SIZE=smoke GRAPHODE_BENCH_RESULTS=/tmp/graphode-bench-smoke $(BENCH_PYTEST) $(BENCH_FILES) -q \
	    --benchmark-only $(BENCH_ARGS)

# Only the 1M-node / 10M-edge GRAND-nl adjoint run (cpu, then the reference).
bench-scale: install
	$(BENCH_PYTEST) bench/test_bench_scale.py -q -s --benchmark-only $(BENCH_ARGS)

# On a machine with a CUDA device and a CUDA build of torch (under 5 minutes): build the CUDA
# binding into graphode._C, check the CUDA and Triton kernels against the reference, then the
# GPU benchmark (bench/results/gpu.json; `make docs` puts it into bench/README.md).
GPU_TESTS ?= tests/test_cuda_kernels.py
bench-gpu: install
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'make bench-gpu: no CUDA device visible to torch ' + torch.__version__ + ' (needs a GPU and a CUDA build of torch)')"
	GRAPHODE_WITH_CUDA=1 $(PIP) install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import graphode.ops as o; b = o.available_backends(); print('backends:', b); assert 'cuda' in b and 'triton' in b, b"
	$(PY) -m pytest $(GPU_TESTS) -q -p no:cacheprovider
	$(BENCH_PYTEST) bench/test_bench_gpu.py -q --benchmark-only --benchmark-autosave $(BENCH_ARGS)

# Regenerate every generated block of README.md, bench/README.md and docs/RESULTS.md from the
# committed raw results (docs/generate.py); docs-check only compares.
docs bench-readme:
	$(PY) docs/generate.py
docs-check:
	$(PY) docs/generate.py --check

# Only the distributed bench (bench/test_bench_distributed.py): the 1M/10M graph in 2 and 4
# METIS parts, one process per part, against the single process (~15 min, up to ~12 GB).
bench-dist: install
	GRAPHODE_BENCH_DIST=1 $(BENCH_PYTEST) bench/test_bench_distributed.py -q -s --benchmark-only $(BENCH_ARGS)

bench-quick: install
	$(PY) -m graphode bench --quick

cmake-test:
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release && cmake --build build/cmake -j2 && ctest --test-dir build/cmake --output-on-failure

clean:
	rm -rf build *.egg-info graphode/_C*.so $(VENV)/.built

distclean: clean
	rm -rf $(VENV)
