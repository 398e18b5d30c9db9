# virnucpro — the two README commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Everything comes from requirements.lock (hash-checked wheels; torch 2.11.0, the build the GPUs run) through
# containers/install.sh, the same script the image's %post runs. First run: ~3 GB of downloads (pip caches them).

.PHONY: install demo test test-gpu bench submit image lock gpu-wheels clean

$(VENV)/.installed: pyproject.toml requirements.lock containers/install.sh containers/pins.py
	rm -rf $(VENV)
	PYTHON=$(PYTHON) bash containers/install.sh $(VENV) --dev
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

# Regenerate requirements.lock after changing pyproject.toml's dependencies (needs uv: pip install uv).
lock:
	$(PYTHON) scripts/lock.py

# .whl/site-cp312.tar.xz for scripts/gpu_suite.sh on the lent GPU machine (carry .whl).
gpu-wheels:
	bash scripts/gpu_wheels.sh

image:
	@command -v apptainer >/dev/null || { echo "apptainer is not installed here: build on a machine that has it (apptainer build virnucpro.sif containers/Apptainer.def), or ask your HPC admins for a build node" >&2; exit 1; }
	apptainer build $(if $(MODELS),--build-arg MODELS=1,) $(if $(FLASH_ATTN),--build-arg FLASH_ATTN=1,) virnucpro.sif containers/Apptainer.def

clean:
	rm -rf $(VENV) demo-out build *.egg-info
