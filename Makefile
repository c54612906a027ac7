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

# Count the writes to the demo's global `counter` (2 threads x 50021 writes).
demo: $(BIN)/perfbp demo/demo
	@$(BIN)/perfbp check
	@ADDR=$$(printf '0x%x' 0x$$(nm demo/demo | awk '$$3 == "counter" {print $$1}')); \
	echo; echo "\$$ perfbp stat -w mem:$$ADDR/8:w -- demo/demo"; \
	$(BIN)/perfbp stat -w mem:$$ADDR/8:w -- demo/demo

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
