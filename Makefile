# perfbp: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CC     ?= cc

.PHONY: demo test bench check ffi clean

$(BIN)/perfbp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo/demo: demo/demo.c
	$(CC) -O2 -g -fno-omit-frame-pointer -pthread -no-pie -o $@ $<

# The story in a few seconds (demo/story): the writes to the demo's global
# `counter` (2 threads x 50021), by name; who wrote it, to the source line;
# what a fifth watch gets.  `make check` first if watchpoints may not work here.
demo: $(BIN)/perfbp demo/demo
	@PERFBP=$(BIN)/perfbp sh demo/story

test: $(BIN)/perfbp demo/demo
	$(BIN)/python -m pytest -q

bench: $(BIN)/perfbp
	$(BIN)/python benchmarks/bench_all.py

# Rewrite perfbp/kernel/_abi_ffi.py after a change to perfbp/kernel/_uapi.py's CDEF.
ffi: $(BIN)/perfbp
	$(BIN)/python -m perfbp.kernel._ffi_build

check: $(BIN)/perfbp
	$(BIN)/perfbp check

clean:
	rm -rf $(VENV) demo/demo *.egg-info .pytest_cache
