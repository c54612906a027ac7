"""Turning watch specs that name symbols into the addresses really accessed.

One set of rules, used by every command (``stat``, ``record``, ``top``,
``slots``) and by the Python API, whether the names are resolved in a
running process, in a program perfbp launches (see :mod:`perfbp.run.follow`),
or in the files alone (planning):

- A bare ``NAME`` is looked up as ld.so looks up a symbol: the executable
  first, then its libraries in load order; ``NAME@OBJECT`` in that object.
- **The live object wins.**  When the executable holds a copy of a library's
  object (an ``R_X86_64_COPY`` relocation, under the same name or an alias
  at the same address), every access goes to the copy and the library's
  original is dead: the watch is put on the copy, and says so.
- A thread-local (``STT_TLS``) name has one copy per thread and no single
  address: it is refused with how to watch one thread's copy.
- An unknown name gets the closest names; an ambiguous one (a ``static``
  defined in several files) lists the candidates.
- A write watch on memory the program maps read-only (``.rodata``,
  ``.text``: a segment without write permission) can never fire, since no
  store reaches it: the watch carries a warning that says so
  (:attr:`Watch.warning`), from the ELF headers of the object the name lives
  in, or for an address in a running process from its ``/proc/PID/maps``.
"""

from __future__ import annotations

import difflib
import errno
import os
from dataclasses import dataclass, replace
from typing import Sequence

from . import images
from ..kernel import system
from ..errors import (InvalidBreakpoint, NoSuchProcess, PerfbpError, PermissionDenied,
                     SymbolNotFound)
from ..planning.planner import Watch
from ..planning.spec import WatchSpec, parse
from .elf import (INSTALL_DEBUG, KERNEL_START, Symbol, load_bias, missing_debug,
                  named_symbols, symbols_named)


@dataclass(frozen=True)
class Resolution:
    """Where a named watch resolved.

    Attributes:
        watch: the watch at its run-time address.
        obj: the object whose bytes are watched (the executable, for a copy).
        defined_in: the object whose symbol was named.
        copied: the name under which the executable copied the object (an
            ``R_*_COPY`` relocation moved the watch), or None.
    """

    watch: Watch
    obj: str
    defined_in: str
    copied: "str | None" = None

    def describe(self) -> str:
        """Plain words: where the watch is, and why there."""
        w = self.watch
        where = f"{w.address:#x}/{w.length}"
        if self.copied is not None:
            return (f"{w.label} is watched in {os.path.basename(self.obj)}'s copy at "
                    f"{where} (a copy relocation: {os.path.basename(self.defined_in)}'s own "
                    f"{self.copied} is unused)")
        return f"{w.label} -> {where} in {self.obj}"


def needs_symbols(specs: "Sequence[WatchSpec]") -> bool:
    return any(s.symbol is not None for s in specs)


def _base_name(text: str) -> str:
    for i, ch in enumerate(text):
        if ch in ".[":
            return text[:i]
    return text


def lookup_symbol(path: str, text: str, spec: "WatchSpec | None" = None
                  ) -> "tuple[Symbol, int, int]":
    """``(symbol, offset inside it, size)`` of ``text``: a symbol, or a
    member or element of one (``config.flags``, ``table[3].next``) from the
    DWARF types.

    Raises:
        SymbolNotFound, InvalidBreakpoint: the name, member or index is
            wrong, or the symbol is thread-local.
    """
    member = "." in text or "[" in text
    try:  # gcc names some statics `name.0`; a member is not looked up whole (the
        # closest names of a miss would cost more than the lookup in a large table)
        whole = not member or bool(symbols_named(path, text))
    except (OSError, ValueError):
        whole = True  # find_symbol says why
    if whole:
        try:
            sym = find_symbol(path, text)
            _refuse_tls(sym, path, spec)
            return sym, 0, sym.size
        except SymbolNotFound:
            if not member:
                raise
    from .dwarf import parse_expr, resolve_member

    name, _parts = parse_expr(text)
    sym = find_symbol(path, name)
    _refuse_tls(sym, path, spec)
    member = resolve_member(path, text)
    return sym, member.offset, member.size


def _refuse_tls(sym: Symbol, path: str, spec: "WatchSpec | None") -> None:
    if sym.kind != "tls":
        return
    what = spec.text if spec is not None else sym.name
    raise InvalidBreakpoint.phrased(
        f"watch {what!r}: {sym.name} is thread-local (STT_TLS in "
        f"{os.path.basename(path)}): every thread has its own copy, at the thread "
        f"pointer plus the module's TLS offset, so no one address is it. Watch one "
        f"thread's copy: find its address in that thread (gdb: `p &{sym.name}`), "
        f"then watch {{address}} with {{thread}}; it is {sym.size or 8} bytes")


def defines(path: str, text: str) -> bool:
    """Whether the ELF file ``path`` defines the variable of ``text``."""
    try:
        return bool(symbols_named(path, _base_name(text)))
    except (OSError, ValueError):
        return False


def find_symbol(path: str, name: str) -> Symbol:
    """The one symbol ``name`` of the ELF file ``path``.

    Raises:
        SymbolNotFound: no such symbol (with the closest names), or several.
    """
    try:
        found = symbols_named(path, name)
    except (OSError, ValueError) as exc:
        raise SymbolNotFound(f"cannot read symbols of {path}: {exc}") from None
    if not found:
        close = difflib.get_close_matches(name, list(named_symbols(path)), n=5, cutoff=0.6)
        hint = (f"; closest: {', '.join(close)}" if close else
                "; list them with `nm` (a stripped program has none: use an address)")
        raise SymbolNotFound(f"no symbol {name!r} in {path}{_stripped([path], hint)}")
    globals_ = [s for s in found if not s.local]
    if len(found) > 1 and len(globals_) != 1:
        where = ", ".join(f"{s.value:#x} ({s.size} bytes, {'local' if s.local else 'global'})"
                          for s in found)
        raise SymbolNotFound.phrased(f"symbol {name!r} is ambiguous in {path}: {len(found)} "
                                     f"definitions at {where} (link-time addresses: add the "
                                     f"load bias of a PIE or a library); watch one by "
                                     f"{{address}}", errno=errno.EINVAL)
    return globals_[0] if len(found) > 1 else found[0]


def kernel_address(spec: WatchSpec) -> WatchSpec:
    """``SYMBOL@kernel``: the kernel symbol's address from /proc/kallsyms.

    Raises:
        SymbolNotFound: kallsyms lacks it (data symbols need
            CONFIG_KALLSYMS_ALL) or hides addresses (kptr_restrict).
    """
    from .elf import kernel_symbol_any

    found = kernel_symbol_any(spec.symbol)
    if found is None or found[0] == 0:
        why = ("/proc/kallsyms hides kernel addresses from this user "
               "(kernel.kptr_restrict): run as root" if found is not None else
               "/proc/kallsyms does not list it: data symbols appear there only in "
               "kernels built with CONFIG_KALLSYMS_ALL; functions always do. Watch "
               "{address} instead")
        raise SymbolNotFound.phrased(f"watch '{spec.text}': no kernel symbol "
                                     f"{spec.symbol!r}: {why}")
    address, kind = found
    if kind.lower() in "tw" and spec.access != "x":
        raise SymbolNotFound(f"watch '{spec.text}': {spec.symbol} is kernel code: watch "
                             f"its execution with :x ({spec.symbol}@kernel:x)", errno=errno.EINVAL)
    return spec.resolved(address, 8)


class Scope:
    """The objects a name is looked up in, in ld.so's order (the executable
    first), each with its load bias (0 for link-time addresses).

    Args:
        objects: ``(path, bias)`` pairs, the executable first; a bias may be
            a callable that computes it when first needed.
    """

    def __init__(self, objects: "Sequence[tuple[str, object]]") -> None:
        self.objects = list(objects)

    @property
    def exe(self) -> str:
        return self.objects[0][0]

    def bias(self, i: int) -> int:
        path, b = self.objects[i]
        if callable(b):
            b = b()
            self.objects[i] = (path, b)
        return b  # type: ignore[return-value]

    def find(self, spec: WatchSpec) -> "int | None":
        """Index of the object that defines ``spec``'s name (or that its
        ``@OBJECT`` names), or None when none of them does."""
        for i, (path, _b) in enumerate(self.objects):
            if spec.object is not None:
                if images.matches(spec.object, path):
                    return i
            elif defines(path, spec.symbol):
                return i
        return None

    def resolve(self, spec: WatchSpec) -> "Resolution | None":
        """Where ``spec`` resolves in this scope, or None when no object of
        it defines the name (yet).

        Raises:
            SymbolNotFound, InvalidBreakpoint: the named object lacks the
                symbol, the member is wrong, or the name is thread-local.
        """
        i = self.find(spec)
        if i is None:
            return None
        path = self.objects[i][0]
        sym, offset, size = lookup_symbol(path, spec.symbol, spec)
        copied = None
        obj, value, bias = path, sym.value + offset, None
        if i > 0 and sym.kind == "object":
            try:
                exe = images.image(self.exe)
            except (OSError, ValueError):
                exe = None
            found = exe and exe.copies and images.copy_target(
                exe, images.aliases(path, sym.value))
            if found:
                copied, copy_addr, _copy_size = found
                obj, value, bias = self.exe, copy_addr + offset, self.bias(0)
        if bias is None:
            bias = self.bias(i)
        watch = Watch.from_spec(spec.resolved(value + bias, size))
        section = images.read_only_at(obj, value, watch.length) if watch.access == "w" else None
        if section is not None:
            watch = _never_fires(watch, f"{section} of {os.path.basename(obj)}, which the "
                                        f"program maps read-only")
        return Resolution(watch, obj, path, copied)


def _never_fires(watch: Watch, where: str) -> Watch:
    """``watch`` with the warning that no store reaches ``where``."""
    return replace(watch, warning=(
        f"{watch.label} is in {where}: no store can reach it, so this write watch can "
        f"never fire (watch its reads with :rw)"))


def warn_read_only(ws: "Sequence[Watch]", target, exe: "str | None" = None) -> "list[Watch]":
    """``ws``, each write watch that no store can reach with its warning
    (:attr:`Watch.warning`): on ``target``, a running process or thread
    (``target.kind``), from its ``/proc/PID/maps``; for a program about to be
    launched (``exe``, a non-PIE executable: its addresses are its link-time
    ones), from its ELF headers.  A name's watch has its warning already
    (:meth:`Scope.resolve`); CPU targets are not checked (an address there
    means something else in every process, while a command runs too)."""
    if target is not None and target.kind == "cpus":
        return list(ws)
    pid = None
    if target is not None and target.kind in ("process", "thread"):
        pid = (target.pid if target.kind == "process" else
               system.thread_group(target.pid) or target.pid) or os.getpid()
    fixed = None
    if pid is None and exe is not None:
        try:
            fixed = None if images.image(exe).shared else exe
        except (OSError, ValueError):
            fixed = None
    out = []
    for w in ws:
        where = None
        if w.warning is None and w.access == "w" and 0 < w.address < KERNEL_START:
            if pid is not None:
                where = _read_only_mapping(pid, w.address, w.length)
            elif fixed is not None:
                section = images.read_only_at(fixed, w.address, w.length)
                where = (f"{section} of {os.path.basename(fixed)}, which the program maps "
                         f"read-only") if section else None
        out.append(w if where is None else _never_fires(w, where))
    return out


def _read_only_mapping(pid: int, address: int, length: int) -> "str | None":
    """Which mapping of ``pid`` without write permission holds all the
    ``length`` bytes at ``address`` (as /proc/PID/maps names it), or None."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                if lo <= address < hi:
                    if "w" in parts[1] or address + length > hi:
                        return None
                    name = parts[5].strip() if len(parts) == 6 else "anonymous memory"
                    return f"a read-only mapping ({parts[1]}) of {name} in process {pid}"
    except (OSError, ValueError, IndexError):
        return None
    return None


def not_found(spec: WatchSpec, searched: "Sequence[str]",
               process: "int | None" = None,
               programs: "Sequence[str] | None" = None) -> SymbolNotFound:
    """The error for a name no object of ``searched`` defines (``programs``:
    the programs those objects belong to, named in the message)."""
    if spec.object is not None:
        names = sorted({os.path.basename(p) for p in searched})
        close = difflib.get_close_matches(spec.object, names, n=4, cutoff=0.4)
        where = (f"is not loaded in process {process}" if process is not None else
                 f"is not among the objects {searched[0]} loads at start")
        return SymbolNotFound.phrased(
            f"watch '{spec.text}': {spec.object} {where}"
            + (f" (loaded: {', '.join(close)})" if close else "")
            + "; give the library's soname or path as the program loads it "
              "(`ldd PROGRAM`, /proc/PID/maps)"
            + ("" if process is not None else
               ", or attach with {process} once a library it opens later is loaded"))
    pool: list[str] = []
    for p in searched:
        try:
            pool += list(named_symbols(p))
        except (OSError, ValueError):
            pass
    close = difflib.get_close_matches(_base_name(spec.symbol), pool, n=5, cutoff=0.6)
    if programs:
        libs = [os.path.basename(p) for p in searched if p not in programs]
        shown = (", ".join(programs[:-1]) + " or " if len(programs) > 1 else "") + programs[-1]
        if libs:
            shown += (f" or {'its' if len(programs) == 1 else 'their'} libraries ("
                      + ", ".join(libs[:6]) + (", ..." if len(libs) > 6 else "") + ")")
    else:
        shown = ", ".join(searched[:4]) + (f" and {len(searched) - 4} more"
                                           if len(searched) > 4 else "")
    hint = (f"; closest: {', '.join(close)}" if close else
            "; list them with `nm -D` (a stripped program has none: use an address)")
    return SymbolNotFound(f"watch '{spec.text}': no symbol {_base_name(spec.symbol)!r} in "
                          f"{shown}{_stripped(programs or searched[:1], hint)}")


def _stripped(programs: "Sequence[str]", hint: str) -> str:
    """``hint``, or where it comes from that a name is missing: the first
    of ``programs`` that is stripped and has no debug file (its names are
    its dynamic symbols alone), and what to do."""
    for p in programs:
        why = missing_debug(p)
        if why is not None:
            close = hint if hint.startswith("; closest:") else ""
            return f"{close}; {why}: {INSTALL_DEBUG}, or watch by address"
    return hint


def static_scope(exe: str, env: "dict[str, str] | None" = None) -> Scope:
    """The program ``exe`` and the libraries it loads at start, at their
    link-time addresses, and ld.so last (its symbols are found by
    ``NAME@ld-linux...``)."""
    objects: list[tuple[str, object]] = [(p, 0) for p in images.library_closure(exe, env)]
    try:
        interp = images.image(exe).interp
    except (OSError, ValueError):
        interp = None
    if interp and os.path.exists(interp):
        objects.append((interp, 0))
    return Scope(objects)


def process_scope(pid: int) -> Scope:
    """The objects mapped in process ``pid``, in ld.so's load order as far as
    the files tell it (the executable, its start-up libraries, ld.so, then
    what was loaded later), each moved by its load bias.

    Raises:
        NoSuchProcess: the process does not exist.
    """
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM) and system.process_exists(pid):
            raise PermissionDenied(
                f"cannot read the executable of process {pid} to find names in it: "
                f"{system.why_not_yours(pid)}. Run as that user or as root",
                errno=exc.errno, pid=pid) from None
        raise NoSuchProcess(f"cannot read the executable of process {pid}: it does not "
                            f"exist or has exited", pid=pid) from None
    mapped = mapped_objects(pid)
    real = {os.path.realpath(p): p for p in mapped}
    order: list[str] = []
    for p in static_scope(exe).objects:
        r = os.path.realpath(p[0])
        if r in real and real[r] not in order:
            order.append(real[r])
    if not order or os.path.realpath(order[0]) != os.path.realpath(exe):
        order.insert(0, exe)
    order += [p for p in mapped if p not in order]

    def bias_of(path: str):
        def compute() -> int:
            try:
                return load_bias(pid, path)
            except (OSError, LookupError) as exc:
                raise PerfbpError(f"cannot find where {path} is loaded in process "
                                  f"{pid}: {exc}") from None
        return compute

    return Scope([(p, bias_of(p)) for p in order])


def resolve_one(spec: WatchSpec, scope: Scope, where: str,
                process: "int | None" = None) -> Resolution:
    """Resolve ``spec`` in ``scope``, or fail naming what was searched.

    Raises:
        SymbolNotFound, InvalidBreakpoint.
    """
    found = scope.resolve(spec)
    if found is None:
        objects = [p for p, _b in scope.objects] or [where]
        raise not_found(spec, objects, process, None if process else objects[:1])
    return found


def resolve(specs: "Sequence[WatchSpec | str]", pid: int) -> "list[Watch]":
    """Watches for ``specs`` (parsed specs, or their text: ``"counter"``,
    ``"environ@libc.so.6"``, ``"0x404040/8:rw"``) in the running process
    ``pid``.

    Raises:
        SymbolNotFound, NoSuchProcess, InvalidBreakpoint.
    """
    specs = [parse(s) if isinstance(s, str) else s for s in specs]
    return [r.watch if isinstance(r, Resolution) else r for r in resolve_all(specs, pid)]


def resolve_all(specs: "Sequence[WatchSpec]", pid: int) -> "list[Resolution | Watch]":
    """As :func:`resolve`, keeping where each name resolved."""
    return _resolve_specs(specs, lambda: process_scope(pid), f"process {pid}", pid)


def _resolve_specs(specs, make_scope, where: str, process: "int | None" = None) -> list:
    out: list = []
    scope = None
    for s in specs:
        if s.symbol is None:
            out.append(Watch.from_spec(s))
        elif s.object == "kernel":
            out.append(Watch.from_spec(kernel_address(s)))
        else:
            if scope is None:
                scope = make_scope()
            out.append(resolve_one(s, scope, where, process))
    return out


def mapped_objects(pid: int) -> "list[str]":
    """The files mapped in ``pid``, in the order of /proc/PID/maps."""
    out: list[str] = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[5].startswith("/"):
                    path = parts[5].strip()
                    if path.endswith(" (deleted)"):
                        continue
                    if path not in out:
                        out.append(path)
    except OSError:
        raise NoSuchProcess(f"process {pid} does not exist (or has exited)", pid=pid) from None
    return out


def resolve_in_file(specs: "Sequence[WatchSpec]", path: "str | Sequence[str]"
                    ) -> "list[Watch]":
    """Watches for ``specs`` at the link-time addresses of the program
    ``path`` and its libraries: what planning needs (a load bias moves whole
    pages, so the pieces are the same).  The same rules as at run time:
    ``NAME@LIB`` and bare names are found in the libraries too, and a copy
    relocation moves the watch to the executable's copy.  Given a command
    line (a list) instead of a path, the programs it names are searched
    too, as for a launch (:func:`resolve_for_command`).

    Raises:
        SymbolNotFound, InvalidBreakpoint: a name found nowhere, a
            thread-local name, a wrong member.
    """
    if not isinstance(path, str):
        from ..kernel.launch import resolve_command

        argv = list(path)
        found = resolve_for_command(specs, argv, resolve_command(argv))
        return [r.watch if isinstance(r, Resolution) else
                r if r is not None else Watch.from_spec(s.resolved(0, 8))
                for s, (r, _k) in zip(specs, found)]
    return [r.watch if isinstance(r, Resolution) else r
            for r in resolve_statically(specs, path)]


def resolve_statically(specs: "Sequence[WatchSpec]", path: str,
                       env: "dict[str, str] | None" = None) -> "list[Resolution | Watch]":
    """As :func:`resolve_in_file`, keeping where each name resolved."""
    return _resolve_specs(specs, lambda: static_scope(path, env), path)


def _command_words(argv: "Sequence[str]") -> "list[str]":
    """The words of ``argv[1:]``, shell command lines split too
    (``sh -c './prog; true'``)."""
    import shlex

    words: list[str] = []
    for a in argv[1:]:
        try:
            lex = shlex.shlex(a, posix=True, punctuation_chars=True)
            lex.whitespace_split = True
            words += list(lex) if " " in a or ";" in a else [a]
        except ValueError:
            words.append(a)
    return words


def _assignment(word: str) -> "tuple[str, str] | None":
    name, eq, value = word.partition("=")
    if eq and name and (name[0].isalpha() or name[0] == "_") \
            and all(c.isalnum() or c == "_" for c in name):
        return name, value
    return None


def command_env(argv: "Sequence[str]", env: "dict[str, str] | None" = None
                ) -> "dict[str, str]":
    """The environment the programs a command line starts will see: ours,
    with its ``NAME=value`` words applied (``env LD_LIBRARY_PATH=lib ./prog``,
    ``sh -c 'LD_LIBRARY_PATH=lib ./prog'``)."""
    out = dict(os.environ if env is None else env)
    for w in _command_words(argv):
        pair = _assignment(w)
        if pair is not None:
            out[pair[0]] = pair[1]
    return out


def command_programs(argv: "Sequence[str]", exe: str) -> "list[str]":
    """``exe``, then the programs its command line names, which it may exec:
    ``env X=1 ./prog``, ``sh -c './prog; true'``, ``timeout 5 prog``."""
    import shutil

    out = [exe]
    for w in _command_words(argv):
        if _assignment(w) is not None:
            continue  # an environment assignment
        path = w if "/" in w else shutil.which(w)
        if path and os.path.isfile(path) and os.access(path, os.X_OK) and path not in out:
            try:
                images.image(path)
            except (OSError, ValueError):
                continue
            out.append(path)
    return out


def reported_programs(argv: "Sequence[str]", exe: str) -> "list[str]":
    """The programs whose code a recording of ``argv`` is about: those its
    command line names by a path, which a wrapper runs (``sh -c './prog'``,
    ``env X=1 ./prog``), else ``exe`` itself.  A program named by a bare
    word (``echo`` in a shell line, ``timeout``'s command) is left out:
    what a wrapper runs on the way is not what is watched."""
    paths = {w for w in _command_words(argv) if "/" in w}
    return [p for p in command_programs(argv, exe)[1:] if p in paths] or [exe]


def resolve_for_command(specs: "Sequence[WatchSpec]", argv: "Sequence[str]", exe: str,
                        env: "dict[str, str] | None" = None
                        ) -> "list[tuple[Resolution | Watch | None, int]]":
    """Where each spec would resolve before ``argv`` runs: ``(resolution,
    index in command_programs)`` for a name, ``(Watch, -1)`` for an address
    or a kernel symbol.  A name is searched in the program and its
    libraries, then in the programs the command line names; ``None`` when
    the program is a script (what it runs cannot be known: it is followed).

    Raises:
        SymbolNotFound: a name no candidate defines (with the closest names
            and every object searched).
        InvalidBreakpoint: a thread-local name, a wrong member.
    """
    try:
        images.image(exe)
        is_elf = True
    except (OSError, ValueError):
        is_elf = False
    programs = command_programs(argv, exe)
    later_env = command_env(argv, env)  # what the programs it starts will see
    scopes: dict[str, Scope] = {}

    def scope(prog: str) -> Scope:
        if prog not in scopes:
            scopes[prog] = static_scope(prog, env if prog == exe else later_env)
        return scopes[prog]

    out: list = []
    for s in specs:
        if s.symbol is None or s.object == "kernel":
            out.append((_resolve_specs([s], lambda: None, exe)[0], -1))
            continue
        for k, prog in enumerate(programs):
            res = scope(prog).resolve(s)
            if res is not None:
                out.append((res, k))
                break
        else:
            if not is_elf:
                out.append((None, -1))
                continue
            searched: list[str] = []
            for prog in programs:
                searched += [o for o, _b in scope(prog).objects if o not in searched]
            raise not_found(s, searched, programs=programs)
    return out
