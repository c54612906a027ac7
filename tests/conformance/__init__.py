"""Conformance: perfbp against perf (and gdb) on real programs of the machine.

Every test runs an installed program (coreutils, xz, gzip, env, sh,
python3.11) under perfbp and under perf, both without address randomization
(``setarch -R``), and asserts that the counts are equal.  The addresses perf
watches are found without perfbp: ``readelf`` (dynamic symbols, copy
relocations), gdb (``info proc mappings``, ``p &var`` from DWARF) and nm.
``tools`` holds those helpers.
"""
