# virnucpro — the two README commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch keeps CI small; on a GPU machine install torch first (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test test-gpu bench submit image clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m virnucpro demo --out demo-out

test: install
	$(PY) -m pytest -q tests

test-gpu: install
	$(PY) -m pytest -q -m gpu tests

bench: install
	$(PY) -m virnucpro bench

# make submit INPUT=reads.fasta [OUT=run-dir] [PROFILE=slurm/profile.toml] [ARGS="more `virnucpro submit` flags"]
# OUT defaults to the input's name + -virnucpro (reads.fasta.gz -> reads-virnucpro). Resume: see slurm/README.md.
SUBMIT_OUT = $(or $(OUT),$(basename $(patsubst %.gz,%,$(notdir $(INPUT))))-virnucpro)
submit:
	@test -n "$(INPUT)" || { echo 'usage: make submit INPUT=reads.fasta [OUT=run-dir] [PROFILE=...] [ARGS="..."]' >&2; exit 2; }
	@$(MAKE) --no-print-directory install
	$(PY) -m virnucpro submit "$(INPUT)" -o "$(SUBMIT_OUT)" --profile "$(or $(PROFILE),slurm/profile.toml)" $(ARGS)

image:
	@command -v apptainer >/dev/null || { echo "apptainer is not installed here: build on a machine that has it (apptainer build virnucpro.sif containers/Apptainer.def), or ask your HPC admins for a build node" >&2; exit 1; }
	apptainer build $(if $(MODELS),--build-arg MODELS=1,) virnucpro.sif containers/Apptainer.def

clean:
	rm -rf $(VENV) demo-out build *.egg-info
