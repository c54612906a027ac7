"""Turning watch specs that name symbols into addresses in a target.

A symbol is looked up in the target's executable (``.symtab``, then
``.dynsym``, with pyelftools) and moved by the executable's load bias, read
from ``/proc/PID/maps``: PIE executables under ASLR resolve to where they
really are.  An unknown name gets the closest names in the message; an
ambiguous one (a ``static`` variable defined in several files) lists the
candidates.
"""

from __future__ import annotations

import difflib
import os
from typing import Sequence

from .errors import NoSuchProcess, PerfbpError, SymbolNotFound
from .planner import Watch
from .spec import WatchSpec
from .symbols import Symbol, load_bias, named_symbols


def needs_symbols(specs: "Sequence[WatchSpec]") -> bool:
    return any(s.symbol is not None for s in specs)


def find_symbol(path: str, name: str) -> Symbol:
    """The one symbol ``name`` of the ELF file ``path``.

    Raises:
        SymbolNotFound: no such symbol (with the closest names), or several.
    """
    try:
        table = named_symbols(path)
    except (OSError, ValueError) as exc:
        raise SymbolNotFound(f"cannot read symbols of {path}: {exc}") from None
    found = table.get(name)
    if not found:
        close = difflib.get_close_matches(name, list(table), n=5, cutoff=0.6)
        hint = (f"; closest: {', '.join(close)}" if close else
                "; list them with `nm` (a stripped program has none: use an address)")
        raise SymbolNotFound(f"no symbol {name!r} in {path}{hint}")
    globals_ = [s for s in found if not s.local]
    if len(found) > 1 and len(globals_) != 1:
        where = ", ".join(f"{s.value:#x} ({s.size} bytes, {'local' if s.local else 'global'})"
                          for s in found)
        raise SymbolNotFound(f"symbol {name!r} is ambiguous in {path}: {len(found)} "
                             f"definitions at {where}; watch one by address "
                             f"(-w ADDR/LEN)", errno=22)
    return globals_[0] if len(found) > 1 else found[0]


def check_symbols(specs: "Sequence[WatchSpec]", exe: str) -> None:
    """Fail early (before launching anything) on a name ``exe`` lacks."""
    for s in specs:
        if s.symbol is not None:
            find_symbol(exe, s.symbol)


def resolve(specs: "Sequence[WatchSpec]", pid: int) -> "list[Watch]":
    """Watches for ``specs`` in process ``pid``: symbols looked up in its
    executable and moved by its load bias.

    Raises:
        SymbolNotFound, NoSuchProcess, InvalidBreakpoint.
    """
    out = []
    exe = None
    bias = None
    for s in specs:
        if s.symbol is not None:
            if exe is None:
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    raise NoSuchProcess(f"cannot read the executable of process {pid}: it "
                                        f"does not exist or has exited", pid=pid) from None
                try:
                    bias = load_bias(pid, exe)
                except (OSError, LookupError) as exc:
                    raise PerfbpError(f"cannot find where {exe} is loaded in process "
                                      f"{pid}: {exc}") from None
            sym = find_symbol(exe, s.symbol)
            s = s.resolved(sym.value + bias, sym.size)
        out.append(Watch.from_spec(s))
    return out


def resolve_in_file(specs: "Sequence[WatchSpec]", path: str) -> "list[Watch]":
    """Watches for ``specs`` at the link-time addresses of ``path``: enough to
    plan them (a load bias moves whole pages, so the pieces are the same)."""
    out = []
    for s in specs:
        if s.symbol is not None:
            sym = find_symbol(path, s.symbol)
            s = s.resolved(sym.value, sym.size)
        out.append(Watch.from_spec(s))
    return out
