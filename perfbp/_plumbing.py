"""What the command line needs beyond the public API: launch status, CPU
lists, process checks, the report's sort keys, the self-check, watch-spec
parsing, call-graph parsing, symbol lookup in a file, and whether a
program's debug information is missing.

Internal: the user interfaces (``perfbp.cli``, ``perfbp.cli.tui``) may import
it (tests/test_layers.py allows them this one path besides the front); it
is not part of the API and may change.  As in the front, each name's module
is imported when the name is first used, so a command pays only for what it
uses.
"""

from importlib import import_module

#: name -> (module, name in it)
_NAMES = {
    "CallGraph": ("kernel.sampling", "CallGraph"),
    "CheckItem": ("run.check", "CheckItem"),
    "CheckReport": ("run.check", "CheckReport"),
    "run_checks": ("run.check", "run_checks"),
    "exit_status": ("kernel.launch", "exit_status"),
    "resolve_command": ("kernel.launch", "resolve_command"),
    "SORT_KEYS": ("data.report", "SORT_KEYS"),
    "resolve_in_file": ("symbols.resolve", "resolve_in_file"),
    "missing_debug": ("symbols.elf", "missing_debug"),
    "reported_programs": ("symbols.resolve", "reported_programs"),
    "INSTALL_DEBUG": ("symbols.elf", "INSTALL_DEBUG"),
    "WatchSpec": ("planning.spec", "WatchSpec"),
    "parse_watch": ("planning.spec", "parse"),
    "online_cpus": ("kernel.system", "online_cpus"),
    "parse_cpu_list": ("kernel.system", "parse_cpu_list"),
    "possible_cpus": ("kernel.system", "possible_cpus"),
    "process_exists": ("kernel.system", "process_exists"),
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    try:
        module, attr = _NAMES[name]
    except KeyError:
        raise AttributeError(f"module 'perfbp._plumbing' has no attribute {name!r}") from None
    value = getattr(import_module(f"perfbp.{module}"), attr)
    globals()[name] = value
    return value
