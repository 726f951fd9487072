# Everything a fresh machine needs: `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO := demo_output

.PHONY: install test test-all lint format demo benchmark clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(INSTALLED)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

test: $(INSTALLED) lint
	$(BIN)/python -m pytest

# Also the tests marked slow (model training and the like).
test-all: $(INSTALLED)
	MSNEWLESIONS_SLOW=1 $(BIN)/python -m pytest

demo: $(INSTALLED)
	$(BIN)/python -m msnewlesions.example $(DEMO)/example
	$(BIN)/msnewlesions preprocess --overwrite \
		--baseline $(DEMO)/example/baseline.nii.gz \
		--followup $(DEMO)/example/followup.nii.gz \
		--out $(DEMO)/preprocessed
	@echo "Preprocessed example pair: $(DEMO)/preprocessed (true new lesions: $(DEMO)/example/true_new_lesions.nii.gz)"

benchmark: $(INSTALLED)
	$(BIN)/python benchmarks/preprocess_open_ms_data.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
