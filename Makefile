# The two commands: `make book` builds the HTML book into _build/html,
# `make test` runs every test. Both create .venv and install what they need.
# Students: `make lab` opens the exercises in their own workspace, work/
# (git-ignored; no other target reads or writes it), `make grade` scores it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# One torch thread per process: the graders run two kernels side by side.
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export DLCOURSE_THREADS ?= 1
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# The book's stored outputs come from training runs, whose round-off digits
# depend on which vector instructions the CPU offers, and a training run
# amplifies them (another CPU printed 228 dead units where ours printed
# 217). Every target computes with the same instructions on any x86-64 CPU
# since 2013, Intel or AMD: torch's own kernels at AVX2, MKL in its
# conditional-numerical-reproducibility branch for Intel and non-Intel CPUs
# alike (COMPATIBLE; its small matrix products cost about 1.7x), oneDNN
# (convolutions) at most AVX2.
export ATEN_CPU_CAPABILITY ?= avx2
export MKL_CBWR ?= COMPATIBLE
export ONEDNN_MAX_CPU_ISA ?= AVX2
# nbval compares each figure's text repr: a non-inline backend (MPLBACKEND=Agg
# in the caller's environment) would blank every figure of the book.
unexport MPLBACKEND
export PATH := $(CURDIR)/$(BIN):$(PATH)

CHAPTERS := $(wildcard book/[0-9][0-9]_*.md)

.PHONY: book test exercises chapters chapter bench venv clean \
    lab grade progress

book: $(STAMP)
	rm -rf _build/html
	$(BIN)/jupyter-book build . --all -W -n --keep-going

test: $(STAMP)
	$(BIN)/pytest tests book \
	    --nbval --nbval-sanitize-with tests/book/sanitize.cfg

exercises: $(STAMP)
	$(BIN)/python -m dlcourse.exercises

# The student's side: copy new exercises into work/ (never overwriting a
# copy; a course fix is offered beside it), then JupyterLab there.
lab: $(STAMP)
	$(BIN)/python -m dlcourse.workspace --lab

# Score the workspace (or NB=work/NN_slug[/exMM_name.ipynb]) with the
# autograder, hidden tests included; `make progress` lists the scores.
grade: $(STAMP)
	@$(BIN)/python -m dlcourse.grade $(NB) || true  # lost points: no error

progress: $(STAMP)
	$(BIN)/python -m dlcourse.progress

# Execute chapter sources into their paired notebooks (outputs committed).
chapters: $(STAMP)
	for nb in $(CHAPTERS); do $(MAKE) --no-print-directory chapter NB=$$nb \
	    || exit 1; done

chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make chapter NB=book/NN_slug.md"; exit 2; }
	cd $(dir $(NB)) && time $(CURDIR)/$(BIN)/jupytext --to ipynb \
	    --execute \
	    $(notdir $(NB))

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

clean:
	rm -rf _build .pytest_cache solutions/header.ipynb \
	    solutions/*/*.ipynb gradebook.db
