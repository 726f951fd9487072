# Everything a fresh machine needs: `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := demo_output

.PHONY: install test test-all lint format demo benchmark clean container container-deps browser-deps dicom-deps docs

# A new environment takes about 7 GB (torch's CUDA build, which also runs on the CPU): say so in one
# sentence before pip runs out of space half-way.
DISK_CHECK := import shutil, sys; free = shutil.disk_usage(".").free / 1e9; \
	sys.exit(None if free >= 6 else f"make: the virtual environment needs about 7 GB on this disk and {free:.1f} GB are free.")

# pip installs without compiling, and compileall then compiles on every core at once (pip compiles
# file after file: about half of its install time here). The one file skipped is torch's test
# helper written in Python 3.12 syntax, which pip's compile skips too.
$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -c '$(DISK_CHECK)'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-cache-dir --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 -x '/torch/testing/_internal/py312_intrinsics\.py$$' $(VENV)/lib
	touch $(INSTALLED)

install: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy src

format: $(INSTALLED)
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

# One worker per core (at most 4: each may hold a few GB), a module's tests in one worker so that
# its fixtures are built once. The workers' thread pools are left as they are: measured on 2 cores
# (2026-12-07), one thread per worker made the default run 6-10 % slower.
PYTEST := $(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile --durations=15

test: $(INSTALLED) lint
	$(PYTEST)

# Also the tests marked slow (model training and the like).
test-all: $(INSTALLED)
	MSNEWLESIONS_SLOW=1 $(PYTEST)

demo: $(INSTALLED)
	$(BIN)/python -m msnewlesions.example $(DEMO)/example
	$(BIN)/msnewlesions segment --overwrite \
		--baseline $(DEMO)/example/baseline.nii.gz \
		--followup $(DEMO)/example/followup.nii.gz \
		--out $(DEMO)/segment
	@echo "Found lesions against the example's true new lesions:"
	$(BIN)/msnewlesions evaluate --overwrite --table -q \
		--pred $(DEMO)/segment/new_lesions.nii.gz \
		--ref $(DEMO)/example/true_new_lesions.nii.gz \
		--out $(DEMO)/evaluation.json
	@echo "Report to review: $(DEMO)/segment/report.html (true lesions: $(DEMO)/example/true_new_lesions.nii.gz)"

# The documentation site into site/ (open site/index.html), warnings as errors, offline.
docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/preprocess_open_ms_data.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache

# The container image (podman, else docker): localhost/msnewlesions:<version> and :latest.
# CONTAINER_WHEELS: local wheel folders pip may use (this machine's mirror when it has one).
CONTAINER_WHEELS ?= $(wildcard /opt/pypi/files /opt/pypi-more/files /opt/wheels)
container:
	CONTAINER_WHEELS="$(CONTAINER_WHEELS)" scripts/build_container.sh

# System packages the container and its test need (Debian): podman and runc to build and run,
# debootstrap for a base image where no container registry is reachable.
container-deps:
	apt-get install -y --no-install-recommends podman runc debootstrap

# The browser the report tests open pages in (Debian's chromium, headless), once, as root.
browser-deps:
	apt-get install -y --no-install-recommends chromium fonts-dejavu-core

# The DICOM validator (dciodvfy, from dicom3tools) and the DICOM server (Orthanc) the DICOM tests
# use, once, as root.
dicom-deps:
	apt-get install -y --no-install-recommends dicom3tools orthanc
