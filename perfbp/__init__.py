"""perfbp: hardware watchpoints on Linux, from Python.

Count or sample every access to a memory location with the kernel's
perf_event breakpoints: the debug registers gdb's ``watch`` uses, without
stopping the program.

    >>> import perfbp
    >>> with perfbp.watch(address, 8) as w:        # a variable of this process
    ...     work()
    >>> print(w.hits, "writes")
    >>> result = perfbp.count(["counter"], command=["./prog"])   # a program, by name
    >>> print(result.watches[0].hits)
    >>> perfbp.plan([perfbp.Watch.parse("buf/64")]).explanation   # will it fit?

The public names below are the whole API; everything else (the kernel
layouts, the record decoder, the slot model) is reachable through its module
(``perfbp.kernel.records``, ``perfbp.kernel.slots`` ...) but may change.  Names are
imported when first used, so ``import perfbp`` costs only what is used.
"""

from ._version import __version__
from .errors import (
    CommandNotFound,
    CorruptRecording,
    InvalidBreakpoint,
    NoBreakpointSlots,
    NoSuchProcess,
    PerfbpError,
    PermissionDenied,
    SymbolNotFound,
    Unsupported,
)

__all__ = [
    # exceptions
    "PerfbpError",
    "NoBreakpointSlots",
    "PermissionDenied",
    "InvalidBreakpoint",
    "NoSuchProcess",
    "Unsupported",
    "CommandNotFound",
    "SymbolNotFound",
    "CorruptRecording",
    # constants
    "__version__",
    # classes
    "Breakpoint",
    "Watch",
    "Target",
    "Plan",
    "Counter",
    "Group",
    "Sampler",
    "WatchHandle",
    "LiveSession",
    # functions
    "watch",
    "count",
    "record",
    "plan",
    "probe",
    "resolve_watches",
    "load_report",
    "load_samples",
]

#: public name -> (module, name in it), imported on first use (PEP 562)
_LAZY = {
    "Breakpoint": ("kernel.breakpoint", "Breakpoint"),
    "Watch": ("planning.planner", "Watch"),
    "Target": ("kernel.events", "Target"),
    "Plan": ("planning.planner", "Plan"),
    "Counter": ("kernel.counter", "Counter"),
    "Group": ("kernel.counter", "Group"),
    "Sampler": ("kernel.sampling", "Sampler"),
    "WatchHandle": ("run.watching", "WatchHandle"),
    "LiveSession": ("run.live", "LiveSession"),
    "watch": ("run.watching", "watch"),
    "count": ("run.session", "count"),
    "record": ("run.recording", "record"),
    "plan": ("planning.planner", "plan"),
    "probe": ("planning.planner", "probe"),
    "resolve_watches": ("symbols.resolve", "resolve"),
    "load_report": ("data.report", "load_report"),
    "load_samples": ("data.frames", "load_samples"),
}


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'perfbp' has no attribute {name!r}") from None
    from importlib import import_module

    found = import_module(f".{module}", __name__)
    for public, (mod, attr) in _LAZY.items():  # every name of that module at once
        if mod == module:
            globals()[public] = getattr(found, attr)  # the next use is a plain lookup
    return globals()[name]


def __dir__() -> "list[str]":
    return sorted(set(globals()) | set(__all__))
