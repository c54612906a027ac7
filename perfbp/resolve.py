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
from .events import Target
from .planner import Watch
from .spec import WatchSpec
from .symbols import Symbol, load_bias, named_symbols


def needs_symbols(specs: "Sequence[WatchSpec]") -> bool:
    return any(s.symbol is not None for s in specs)


def lookup(path: str, text: str) -> "tuple[int, int]":
    """``(link-time address, size)`` of a symbol, or of a member or element
    of one (``config.flags``, ``table[3].next``) from the DWARF types.

    Raises:
        SymbolNotFound, InvalidBreakpoint: the name, member or index is wrong.
    """
    try:
        sym = find_symbol(path, text)  # gcc names some statics `name.0`
        return sym.value, sym.size
    except SymbolNotFound:
        if "." not in text and "[" not in text:
            raise
    from .dwarf import parse_expr, resolve_member

    name, _parts = parse_expr(text)
    sym = find_symbol(path, name)
    member = resolve_member(path, text)
    return sym.value + member.offset, member.size


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


def kernel_address(spec: WatchSpec) -> WatchSpec:
    """``SYMBOL@kernel``: the kernel symbol's address from /proc/kallsyms.

    Raises:
        SymbolNotFound: kallsyms lacks it (data symbols need
            CONFIG_KALLSYMS_ALL) or hides addresses (kptr_restrict).
    """
    from .symbols import kernel_symbol_any

    found = kernel_symbol_any(spec.symbol)
    if found is None or found[0] == 0:
        why = ("/proc/kallsyms hides kernel addresses from this user "
               "(kernel.kptr_restrict): run as root" if found is not None else
               "/proc/kallsyms does not list it: data symbols appear there only in "
               "kernels built with CONFIG_KALLSYMS_ALL; functions always do. Give the "
               "address instead (-w 0xffff...:w)")
        raise SymbolNotFound(f"watch '{spec.text}': no kernel symbol {spec.symbol!r}: {why}")
    address, kind = found
    if kind.lower() in "tw" and spec.access != "x":
        raise SymbolNotFound(f"watch '{spec.text}': {spec.symbol} is kernel code: watch "
                             f"its execution with :x ({spec.symbol}@kernel:x)", errno=22)
    return spec.resolved(address, 8)


def check_symbols(specs: "Sequence[WatchSpec]", exe: str) -> None:
    """Fail early (before launching anything) on a name ``exe`` lacks."""
    for s in specs:
        if s.symbol is not None and s.object is None:
            lookup(exe, s.symbol)
        elif s.symbol is not None and s.object == "kernel":
            kernel_address(s)


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
        if s.symbol is not None and s.object == "kernel":
            out.append(Watch.from_spec(kernel_address(s)))
            continue
        if s.symbol is not None and s.object is not None:
            out.append(Watch.from_spec(library_address(s, pid)))
            continue
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
            value, size = lookup(exe, s.symbol)
            s = s.resolved(value + bias, size)
        out.append(Watch.from_spec(s))
    return out


def library_address(spec: WatchSpec, pid: int) -> WatchSpec:
    """``SYMBOL@OBJECT``: the symbol in a shared object mapped in ``pid``,
    matched by file name or soname (``environ@libc.so.6``), moved by that
    object's load bias.

    Raises:
        SymbolNotFound: the object is not loaded in the process (yet), or
            lacks the symbol.
    """
    objects = mapped_objects(pid)
    want = spec.object
    matches = [p for p in objects if os.path.basename(p) == want or p == want
               or os.path.basename(p).startswith(want + ".")]
    if not matches:
        names = sorted({os.path.basename(p) for p in objects})
        close = difflib.get_close_matches(want, names, n=4, cutoff=0.4)
        raise SymbolNotFound(
            f"watch '{spec.text}': {want} is not loaded in process {pid}"
            + (f" (loaded: {', '.join(close)})" if close else "")
            + "; give the library's soname or path as the process maps it "
              "(see /proc/PID/maps), or start the program under perfbp (-- CMD) so "
              "that perfbp waits for its libraries")
    path = matches[0]
    value, size = lookup(path, spec.symbol)
    try:
        bias = load_bias(pid, path)
    except (OSError, LookupError) as exc:
        raise SymbolNotFound(f"watch '{spec.text}': cannot find where {path} is loaded: "
                             f"{exc}") from None
    return spec.resolved(value + bias, size)


def mapped_objects(pid: int) -> "list[str]":
    """The files mapped in ``pid``, in the order of /proc/PID/maps."""
    out: list[str] = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    path = parts[5].strip()
                    if path not in out:
                        out.append(path)
    except OSError:
        raise NoSuchProcess(f"process {pid} does not exist (or has exited)", pid=pid) from None
    return out


def resolve_in_file(specs: "Sequence[WatchSpec]", path: str) -> "list[Watch]":
    """Watches for ``specs`` at the link-time addresses of ``path``: enough to
    plan them (a load bias moves whole pages, so the pieces are the same)."""
    out = []
    for s in specs:
        if s.symbol is not None:
            value, size = lookup(path, s.symbol)
            s = s.resolved(value, size)
        out.append(Watch.from_spec(s))
    return out


def prepare_watches(watches: "Sequence", target: "Target | None",
                    command: "Sequence[str] | None") -> "tuple[object, list[Watch]]":
    """Resolve watch specs that name symbols, in the target's executable.

    For a launch, the symbols are checked in the program before anything
    runs, then the program is started under ptrace, stopped right after its
    exec, and resolved in its new image (so a PIE under ASLR resolves to
    where it really is): the returned child is that stopped child, to be
    armed and then :meth:`~perfbp.launch.Child.resume`-d.

    Returns:
        ``(child or None, watches)``.
    """
    from . import launch, system
    from .planner import as_watches

    items = list(watches)
    specs = [w for w in items if isinstance(w, WatchSpec)]
    if not needs_symbols(specs):
        return None, as_watches([Watch.from_spec(w) if isinstance(w, WatchSpec) else w
                                 for w in items])
    if any(not isinstance(w, WatchSpec) for w in items):
        raise PerfbpError("give every watch as a spec when any of them names a symbol")
    if command is not None:
        check_symbols(specs, launch.resolve_command(list(command)))
        child = launch.prepare(list(command), trace=True)
        try:
            child.start()
            if any(s.object not in (None, "kernel") for s in specs if s.symbol):
                # library symbols: let the dynamic loader map the libraries
                # first (the program stops again at its entry point, before
                # any constructor and before main)
                child.run_to_entry()
            return child, resolve(specs, child.pid)
        except BaseException:
            child.kill()
            raise
    if target.kind == "cpus" and all(s.object == "kernel" for s in specs if s.symbol):
        return None, resolve(specs, 0)
    if target.kind == "cpus":
        raise PerfbpError("a watch on a symbol needs a process to look the symbol up in: "
                          "use -p PID or -- CMD (or give the address for -a/-C)")
    pid = target.pid if target.kind == "process" else (system.thread_group(target.pid)
                                                       or target.pid)
    if pid == 0:
        pid = os.getpid()
    return None, resolve(specs, pid)


def prepare_run(watches: "Sequence", target: "Target | None",
                command: "Sequence[str] | None", multiplex: "float | None"):
    """Everything before arming, shared by count, record and top: resolve
    the names, plan the watches (refusing what does not fit unless
    ``multiplex`` lets them take turns), and fork the command (stopped
    before exec, or after exec under ptrace when names needed resolving).

    Returns:
        ``(child or None, watches, plan, traced)``.

    Raises:
        PerfbpError: nothing is left running.
    """
    from . import launch
    from .planner import plan

    if (target is None) == (command is None):
        raise PerfbpError("give exactly one target: a process, thread, CPUs, or a command")
    child, ws = prepare_watches(watches, target, command)
    traced = child is not None and child.traced
    try:
        the_plan = plan(ws, target)
        if not the_plan.fits and multiplex is None:
            the_plan.require()
        if not the_plan.fits and len({w.exclude_kernel for w in ws}) > 1:
            raise PerfbpError("multiplexed watches must all count kernel-mode hits or all not")
        if child is None and command is not None:
            child = launch.prepare(list(command))
    except BaseException:
        if child is not None:
            child.kill()
        raise
    return child, ws, the_plan, traced
