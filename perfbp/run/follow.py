"""Launching a command and following it — its threads, its children and
every program it execs — so that each watch is armed at the earliest moment
its address is known, and a named watch follows the program that defines
the name.

perfbp traces the command it launches (``PTRACE_SEIZE`` with fork, clone
and exec events) from a thread of its own, the tracer.  Every watch's events
are opened on the command before it execs, with ``enable_on_exec`` and
``inherit``, so one set of debug-register slots is reserved up front (the
plan is checked before anything runs) and the kernel itself starts them
inside ``execve``.  A named watch whose address is not known yet starts
*parked* (a write breakpoint on page 0, which no write ever completes) and
is moved onto its address in place (``PERF_EVENT_IOC_MODIFY_ATTRIBUTES``)
while the program is stopped, at the moment that address becomes known:

========================================  ======================================
watch                                     armed
========================================  ======================================
an address (``0x404040``, ``mem:...``)    inside the first ``execve``, in every
                                          thread and child, whatever the command
                                          execs later (perf's semantics)
a name in a non-PIE executable            inside the first ``execve`` too
a name in a PIE executable, or a          at the exec stop: ``execve`` has mapped
library object the executable copies      the program, its first instruction has
(copy relocation)                         not run
a name in a library                       when ld.so's ``mmap`` of that library
                                          returns: before ld.so zero-fills its
                                          ``.bss``, relocates it (the copy
                                          relocations included) or runs any
                                          initializer (the tracer stops the
                                          process at its system calls until one
                                          comes from outside ld.so: loading is
                                          over then; no breakpoint is planted)
========================================  ======================================

At every exec of a followed process its names are resolved again in the new
program: a watch whose name the new program defines moves there, one it does
not define is parked, and :attr:`Follower.notes` says which.  The events are
shared by the whole process tree, so when several live programs define a
name the newest is watched (a note says the other is not, meanwhile); when
it exits the watch goes back to the one before.  A name defined by no
program of the run is reported with the programs searched.

The tracer also keeps the command alive on machines whose hypervisor
sometimes delivers a debug exception without its status (DR6 empty): the
kernel cannot tell which breakpoint fired, does not count the hit and sends
the program a SIGTRAP that would kill it.  The tracer drops such a SIGTRAP
(``si_code`` TRAP_BRKPT, not after an ``int1`` instruction).  When one watch
alone is armed the hit can only be that watch's: it is counted in
:attr:`Follower.recovered`; otherwise in :attr:`Follower.unattributed`, and
the output says the counts may be short by that many.

Tracing is x86-64 only for the library stage (syscall registers, ``int3``);
elsewhere names in libraries are refused with ``-p`` as the way out.
"""

from __future__ import annotations

import errno as E
import os
import signal
import threading
from dataclasses import dataclass, field, replace
from typing import Sequence

from ..kernel import abi
from ..symbols import images
from ..kernel.breakpoint import Breakpoint
from ..errors import InvalidBreakpoint, PerfbpError, SymbolNotFound
from ..kernel.launch import exec_failed, fork_before_exec
from ..planning.planner import Watch
from ..symbols.resolve import Resolution, Scope, resolve_for_command, static_scope
from ..planning.spec import WatchSpec, parse

#: Where a watch waits for its address: a 1-byte write breakpoint on page 0,
#: which is never mapped (vm.mmap_min_addr), so no write there completes.
PARKED = Breakpoint(0, 1, "w")

_WALL = 0x40000000
_TRAP_BRKPT = 1
_SYS_MMAP = 9
_ENOSYS = (1 << 64) - E.ENOSYS
_AT_BASE = 7
NOTES_PER_WATCH = 5  # then one line that says how many more
_PAGE = 4096
_OPTIONS = (abi.PTRACE_O_TRACESYSGOOD | abi.PTRACE_O_TRACEFORK | abi.PTRACE_O_TRACEVFORK
            | abi.PTRACE_O_TRACECLONE | abi.PTRACE_O_TRACEEXEC)
_JOB_CONTROL = {signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}


@dataclass
class Binding:
    """Where a named watch was armed, in which process and program.

    Attributes:
        pid: the process.
        program: its executable at the time.
        resolution: where the name resolved (``watch``, object, copy).
        hits: hits counted while armed there (filled in when it ends).
        active: still armed there.
    """

    pid: int
    program: str
    resolution: Resolution
    start: int = 0
    hits: int = 0
    active: bool = True

    def as_dict(self) -> dict:
        r = self.resolution
        out = {"pid": self.pid, "program": self.program, "object": r.obj,
               "address": r.watch.address, "length": r.watch.length, "hits": self.hits}
        if r.copied is not None:
            out["copy_of"] = {"object": r.defined_in, "symbol": r.copied}
        return out


class HolderArmer:
    """Moves the events of each watch: one holder per piece (a
    :class:`~perfbp.Counter` or a sampler slot), with ``retarget``,
    ``enable`` and ``read``."""

    def __init__(self, holders: "Sequence[Sequence]", programs: "Sequence | None" = None) -> None:
        self.holders = [list(h) for h in holders]
        #: per watch, per piece, its ValueProgram (a watch with a condition)
        self.programs = [list(p) for p in programs] if programs else None
        #: pid -> [(program, piece, its hits then)] bound while ld.so loads
        self._fresh: "dict[int, list]" = {}

    def pieces(self, i: int) -> int:
        return len(self.holders[i])

    def started(self, pid: "int | None" = None) -> None:
        """The first exec enabled every event (enable_on_exec): say so to
        the holders, so that moving one keeps it enabled.  With conditions,
        the value each piece holds now in ``pid`` (stopped at its exec) is
        the ``old`` of its first hit."""
        for group in self.holders:
            for h in group:
                h.enable()
        if self.programs and pid is not None:
            for group, progs in zip(self.holders, self.programs):
                _set_old(progs, [h.breakpoint for h in group], pid)

    def bind(self, i: int, watch: Watch, pid: "int | None" = None) -> None:
        for h, bp in zip(self.holders[i], watch.pieces):
            h.retarget(bp)
        if self.programs and pid is not None:
            _set_old(self.programs[i], watch.pieces, pid)
            self._fresh.setdefault(pid, []).extend(
                (p, bp, p.tally().hits) for p, bp in zip(self.programs[i], watch.pieces)
                if p is not None)

    def settle(self, pid: int) -> None:
        """ld.so has loaded ``pid``'s libraries: a piece bound while it
        mapped them (a library's variable) held what the mapping held then,
        not yet the library's data: read it again, unless a hit since has
        given the program its value."""
        from ..kernel.values import read_value

        for prog, bp, hits in self._fresh.pop(pid, ()):
            if prog.prog_fd >= 0 and prog.tally().hits == hits:
                prog.set_last(read_value(pid, bp.address, bp.length) or 0)

    def park(self, i: int) -> None:
        for h in self.holders[i]:
            h.retarget(PARKED)

    def hits(self, i: int) -> int:
        return sum(h.read() for h in self.holders[i])


class MuxArmer:
    """Moves multiplexed watches: the multiplexer re-points its slots at a
    watch's pieces when the watch's turn comes, so binding replaces the
    watch's pieces and takes effect at the next rotation (one time slice
    at most)."""

    def __init__(self, mux) -> None:
        self.mux = mux

    def pieces(self, i: int) -> int:
        return len(self.mux.watches[i].pieces)

    def started(self, pid: "int | None" = None) -> None:
        pass

    def settle(self, pid: int) -> None:
        pass

    def bind(self, i: int, watch: Watch, pid: "int | None" = None) -> None:
        self.mux.watches[i] = watch

    def park(self, i: int) -> None:
        self.mux.watches[i] = parked_like(self.mux.watches[i])

    def hits(self, i: int) -> int:
        return self.mux.seen[i]


def _set_old(programs, pieces, pid: int) -> None:
    """Make what each piece holds now in ``pid`` the ``old`` of its next hit
    (0 where it cannot be read)."""
    from ..kernel.values import read_value

    for prog, bp in zip(programs, pieces):
        if prog is not None and prog.prog_fd >= 0 and bp != PARKED:
            prog.set_last(read_value(pid, bp.address, bp.length) or 0)


def parked_like(watch: Watch) -> Watch:
    """``watch`` with every piece parked: what its events open at."""
    return Watch(watch.label, tuple(PARKED for _ in watch.pieces), watch.exclude_kernel)


def shifted(res: Resolution, bias: int) -> Resolution:
    """A link-time resolution moved by a load bias."""
    w = res.watch
    pieces = tuple(Breakpoint(p.address + bias, p.length, p.access) for p in w.pieces)
    return replace(res, watch=replace(w, pieces=pieces))


@dataclass
class _Loading:
    """A process between its exec and the end of ld.so's loading (its first
    system call from outside ld.so): pending names are resolved as each
    library is mapped."""

    exe: str
    ldso: "tuple[int, int]"  # ld.so's mapped range: its system calls are loading
    pending: "list[int]"
    objects: "list[tuple[str, int]]"
    seen: "set[str]" = field(default_factory=set)


class Follower:
    """A command launched stopped before ``execve`` and followed through its
    threads, children and execs (see the module documentation).

    Open the events on :attr:`pid`, hand them over with :meth:`arm`, then
    :meth:`start`; :meth:`poll`, :meth:`wait`, :meth:`kill` and
    :meth:`abort` as for a :mod:`subprocess` child.

    Args:
        argv, path, env: the command.
        specs: per watch, the spec of a named watch (None for the others).
        initial: per watch, its static resolution in the first program (a
            :class:`~perfbp.symbols.resolve.Resolution`), or None.
        arming: per watch, ``"exec"`` (armed at its address inside execve)
            or ``"bind"`` (parked until the tracer binds it).
        trace: follow the command (ptrace); False: launch it and wait for it,
            for a program that uses ptrace itself (names are then refused).

    Attributes:
        bindings: per watch, where it was armed, in order.
        notes: what happened to the named watches (moves, disarms).
        programs: every program the command and its children exec'd.
        recovered: per watch, hits the kernel could not count (a debug
            exception without its status) that can only be that watch's.
        unattributed: such hits while several watches were armed.
    """

    traced = True

    def __init__(self, argv: "list[str]", path: str, env: "dict[str, str] | None",
                 specs: "Sequence[WatchSpec | None]", initial: "Sequence[Resolution | None]",
                 arming: "Sequence[str]", trace: bool = True) -> None:
        self.argv = list(argv)
        self.path = path
        self.trace = trace
        self.specs = list(specs)
        self.initial = list(initial)
        self.arming = list(arming)
        self.returncode: "int | None" = None
        self.bindings: list[list[Binding]] = [[] for _ in self.specs]
        self.notes: list[str] = []
        self.programs: list[str] = []
        self.unattributed = 0
        self.recovered = [0] * len(self.specs)
        self.error: "BaseException | None" = None
        self._armer = None
        self._static: list[Watch] = []
        self._lock = threading.Lock()
        self._loading: dict[int, _Loading] = {}
        self._displaced: dict[int, str] = {}  # watch -> the program it was armed in
        self._noted: dict[int, int] = {}  # watch -> notes about it
        self._why: dict[int, str] = {}  # watch -> why no program could have it
        self._exe: dict[int, str] = {}  # process -> its program
        self._threads: set[int] = set()
        self._started_events = False
        self._first_exec = threading.Event()
        self._exited = threading.Event()
        self._ready = threading.Event()
        self._go = threading.Event()
        self._abort = False
        self._pidfd = -1
        self._env = env
        self._err = -1
        self.pid = -1
        self._thread = threading.Thread(target=self._run, name="perfbp-tracer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self.error is not None:
            raise self.error

    # -- the Child verbs (main thread) --------------------------------------------------
    def arm(self, armer, watches: "Sequence[Watch]" = ()) -> None:
        """Hand over the events (an object with ``pieces``, ``bind``,
        ``park``, ``hits`` and ``started``, such as :class:`HolderArmer`) and
        the watches as planned."""
        self._armer = armer
        self._static = list(watches)
        for i, mode in enumerate(self.arming):
            if mode == "exec" and self.initial[i] is not None:
                self.bindings[i].append(Binding(self.pid, self.path, self.initial[i]))

    def start(self) -> None:
        """Let the command exec; return once its first program is mapped and
        the names it defines are armed.

        Raises:
            CommandNotFound: the exec failed (the reason from its errno).
        """
        self._go.set()
        data = os.read(self._err, 64)
        os.close(self._err)
        self._err = -1
        if data:
            self.wait()
            raise exec_failed(self.argv, data)
        while not self._first_exec.wait(0.05):
            if self._exited.is_set():
                break

    def pidfd_open(self) -> int:
        """A new pidfd of the command (readable once it has ended)."""
        return os.dup(self._pidfd)

    def release(self) -> None:
        """Close the descriptors kept for the command (its pidfd, the pipe
        of its exec's error): once it has been reaped.  Safe to call twice."""
        for name in ("_pidfd", "_err"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                os.close(fd)

    def abort(self) -> None:
        """Make the command exit without running, and reap it."""
        self._abort = True
        self._go.set()
        self.wait()

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait()

    def poll(self) -> "int | None":
        return self.returncode

    def wait(self) -> int:
        while not self._exited.wait(0.1):
            pass
        return self.returncode  # type: ignore[return-value]

    def finish(self) -> None:
        """Close the bindings' accounting (call once the events are read
        for the last time, before they are closed)."""
        for i, n in sorted(self._noted.items()):
            if n > NOTES_PER_WATCH:
                self.notes.append(f"watch '{self.specs[i].text}': {n - NOTES_PER_WATCH} more "
                                  f"notes like these (JSON lists every binding)")
        with self._lock:
            for i, group in enumerate(self.bindings):
                for b in group:
                    if b.active:
                        b.hits = self._armer.hits(i) - b.start if self._armer else 0
                        b.active = False
            self._armer = None

    def unresolved(self) -> "list[int]":
        """Named watches that no program of the run defined."""
        return [i for i, s in enumerate(self.specs) if s is not None and not self.bindings[i]]

    def unresolved_error(self, i: int) -> SymbolNotFound:
        if i in self._why:
            return SymbolNotFound(self._why[i])
        spec = self.specs[i]
        progs = list(dict.fromkeys(self.programs)) or [self.path]
        from ..symbols.resolve import not_found
        objects: list[str] = []
        for p in progs:
            objects += [o for o, _b in static_scope(p).objects if o not in objects]
        return not_found(spec, objects, programs=progs)

    # -- the tracer thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            pid, go_w, err_r = fork_before_exec(self.path, self.argv, self._env)
            self.pid = pid
            self._err = err_r
            self._pidfd = os.pidfd_open(pid)
            if self.trace:
                abi.ptrace(abi.PTRACE_SEIZE, pid, 0, _OPTIONS)
            self._threads.add(pid)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.error = PerfbpError(f"cannot start '{self.argv[0]}' under perfbp's tracer: "
                                     f"{exc}")
            self._ready.set()
            self._exited.set()
            return
        self._ready.set()
        self._go.wait()
        try:
            os.write(go_w, b"x" if self._abort else b"g")
        except OSError:
            pass
        os.close(go_w)
        try:
            if self.trace:
                self._loop()
            else:  # not followed: only its end
                _, status = os.waitpid(self.pid, 0)
                self.returncode = os.waitstatus_to_exitcode(status)
        finally:
            self._first_exec.set()
            self._exited.set()

    def _loop(self) -> None:
        while True:
            try:
                tid, status = os.waitpid(-1, _WALL)
            except ChildProcessError:
                return
            try:
                self._handle(tid, status)
            except ProcessLookupError:
                pass  # the task died under us: its exit is reported next
            except Exception as exc:  # noqa: BLE001 - never leave a task stopped
                if not (isinstance(exc, OSError) and exc.errno == E.ESRCH):
                    self._note(f"perfbp's tracer: {type(exc).__name__}: {exc}")
                self._loading.pop(tid, None)
                if os.WIFSTOPPED(status):
                    try:
                        abi.ptrace(abi.PTRACE_CONT, tid, 0, 0)
                    except OSError:
                        pass
            if self.returncode is not None and not self._threads:
                return

    def _handle(self, tid: int, status: int) -> None:
        if os.WIFEXITED(status) or os.WIFSIGNALED(status):
            self._threads.discard(tid)
            self._loading.pop(tid, None)
            if tid in self._exe:
                del self._exe[tid]
                self._process_gone(tid)
            if tid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self._exited.set()
            return
        if not os.WIFSTOPPED(status):
            return
        sig = os.WSTOPSIG(status)
        event = status >> 16
        self._threads.add(tid)
        if event == abi.PTRACE_EVENT_EXEC:
            former = abi.ptrace_eventmsg(tid)
            if former != tid:
                self._threads.discard(former)
            self._on_exec(tid)
            self._resume(tid, 0)
        elif event in (abi.PTRACE_EVENT_FORK, abi.PTRACE_EVENT_VFORK, abi.PTRACE_EVENT_CLONE):
            new = abi.ptrace_eventmsg(tid)
            self._threads.add(new)
            self._resume(tid, 0)
        elif event == abi.PTRACE_EVENT_STOP:
            if sig in _JOB_CONTROL:
                abi.ptrace(abi.PTRACE_LISTEN, tid, 0, 0)  # a group-stop: stay stopped
            else:
                self._resume(tid, 0)
        elif sig == signal.SIGTRAP | 0x80:
            self._on_syscall(tid)
            self._resume(tid, 0)
        elif sig == signal.SIGTRAP:
            self._resume(tid, self._on_sigtrap(tid))
        else:
            self._resume(tid, sig)

    def _resume(self, tid: int, sig: int) -> None:
        request = abi.PTRACE_SYSCALL if tid in self._loading else abi.PTRACE_CONT
        abi.ptrace(request, tid, 0, sig)

    def _on_sigtrap(self, tid: int) -> int:
        """The signal to deliver for a SIGTRAP stop (0: none)."""
        _signo, code, _addr = abi.ptrace_siginfo(tid)
        regs = abi.ptrace_regs(tid)
        rip = int(regs[abi.USER_REGS_RIP])
        if code == _TRAP_BRKPT:
            try:
                before = abi.ptrace_peek(tid, rip - 1) & 0xFF
            except OSError:
                before = None
            if before != 0xF1:  # not an int1 instruction: a lost debug status
                armed = self._armed()
                if len(armed) > 1:
                    armed = self._accessed(tid, rip, armed)
                if len(armed) == 1:
                    self.recovered[armed[0]] += 1
                else:
                    self.unattributed += 1
                return 0
        return signal.SIGTRAP

    def _armed(self) -> "list[int]":
        """The watches armed now: every address watch, and the named ones
        bound somewhere."""
        return [i for i, s in enumerate(self.specs)
                if (s is None and self.arming[i] != "bind")
                or (self.bindings[i] and self.bindings[i][-1].active)]

    def _watch_now(self, i: int) -> Watch:
        b = self.bindings[i]
        if b and b[-1].active:
            return b[-1].resolution.watch
        return self._static[i]

    def _accessed(self, tid: int, rip: int, armed: "list[int]") -> "list[int]":
        """The armed watches the instruction that ends at ``rip`` may have
        accessed.  Globals are reached RIP-relative (ModRM mod=00 rm=101): the
        operand is ``rip + disp32``, the disp32 right before any immediate at
        the end of the instruction.  Every immediate size is tried; the
        watches such an address falls in are the answer (all of ``armed``
        when none does: the access went through a register)."""
        import struct

        try:
            raw = b"".join(struct.pack("<Q", abi.ptrace_peek(tid, rip - 16 + 8 * k))
                           for k in range(2))
        except OSError:
            return armed
        hit = []
        for imm in (0, 1, 2, 4):
            end = 16 - imm  # where the disp32 ends, in raw
            if (raw[end - 5] & 0xC7) != 0x05:
                continue
            ea = (rip + struct.unpack_from("<i", raw, end - 4)[0]) & ((1 << 64) - 1)
            for i in armed:
                if any(p.address - 8 < ea < p.address + p.length
                       for p in self._watch_now(i).pieces) and i not in hit:
                    hit.append(i)
        return hit or armed

    # -- names ------------------------------------------------------------------------
    def _note(self, text: str, watch: "int | None" = None) -> None:
        if watch is not None:
            n = self._noted[watch] = self._noted.get(watch, 0) + 1
            if n > NOTES_PER_WATCH:
                return
        self.notes.append(text)

    def _bind(self, i: int, pid: int, program: str, res: Resolution) -> None:
        armer = self._armer
        if armer is None:
            return
        with self._lock:
            if self._armer is None:
                return
            cur = self.bindings[i][-1] if self.bindings[i] else None
            if cur is not None and cur.active and cur.pid == pid \
                    and cur.resolution.watch.pieces == res.watch.pieces:
                cur.program = program  # armed there since execve
                return
            if len(res.watch.pieces) != armer.pieces(i):
                self._note(f"watch '{self.specs[i].text}': in {program} (pid {pid}) it needs "
                           f"{len(res.watch.pieces)} debug registers and perfbp reserved "
                           f"{armer.pieces(i)} when it planned the run: not watched there; "
                           f"give its length (/LEN) or run that program directly")
                return
            progs = getattr(armer, "programs", None)
            if progs and any(p is not None and p.length != bp.length
                             for p, bp in zip(progs[i], res.watch.pieces)):
                self._note(f"watch '{self.specs[i].text}': in {program} (pid {pid}) its "
                           f"pieces are {'/'.join(str(b.length) for b in res.watch.pieces)} "
                           f"bytes long, and its condition reads "
                           f"{'/'.join(str(p.length) for p in progs[i])} bytes, as planned: "
                           f"not watched there; run that program directly")
                return
            now = armer.hits(i)
            if cur is not None and cur.active:
                cur.hits = now - cur.start
                cur.active = False
                self._note(f"watch '{self.specs[i].text}': moved from {cur.program} "
                           f"(pid {cur.pid}) to {program} (pid {pid}), which defines it too; "
                           f"the events are shared by the process tree, so pid {cur.pid}'s "
                           f"accesses are not counted until pid {pid} ends", i)
            elif i in self._displaced:
                self._note(f"watch '{self.specs[i].text}': re-resolved in {program} (pid "
                           f"{pid}), which replaced {self._displaced.pop(i)}", i)
            armer.bind(i, res.watch, pid)
            self.bindings[i].append(Binding(pid, program, res, start=now))

    def _park(self, i: int, pid: int, why: "str | None") -> None:
        """Disarm watch ``i`` if it is armed in ``pid``; ``why`` None: only
        for now (the new program's libraries may define it)."""
        armer = self._armer
        with self._lock:
            cur = self.bindings[i][-1] if self.bindings[i] else None
            if armer is None or cur is None or not cur.active or cur.pid != pid:
                return
            cur.hits = armer.hits(i) - cur.start
            cur.active = False
            armer.park(i)
            if why is None:
                self._displaced[i] = cur.program
            else:
                self._note(f"watch '{self.specs[i].text}': disarmed in pid {pid}: {why} "
                           f"(it was watched in {cur.program})", i)

    def _process_gone(self, pid: int) -> None:
        """A process ended: its watches go back to the latest earlier place
        that still runs the same program (the parent that started it), or
        are parked (no other process may count at that address)."""
        armer = self._armer
        for i, group in enumerate(self.bindings):
            cur = group[-1] if group else None
            if armer is None or cur is None or not cur.active or cur.pid != pid:
                continue
            back = next((b for b in reversed(group[:-1])
                         if self._exe.get(b.pid) == b.program), None)
            with self._lock:
                now = armer.hits(i)
                cur.hits = now - cur.start
                cur.active = False
                if back is None:
                    armer.park(i)
                    continue
                armer.bind(i, back.resolution.watch, back.pid)
                group.append(Binding(back.pid, back.program, back.resolution, start=now))
            self._note(f"watch '{self.specs[i].text}': back in {back.program} (pid "
                       f"{back.pid}) after pid {pid} ended", i)

    def _on_exec(self, pid: int) -> None:
        exe = os.readlink(f"/proc/{pid}/exe")
        first = not self._started_events
        if first and self._armer is not None:
            self._armer.started(pid)
        self._started_events = True
        self._exe[pid] = exe
        self.programs.append(exe)
        self._loading.pop(pid, None)
        named = [i for i, s in enumerate(self.specs) if s is not None]
        if not named:
            self._first_exec.set()
            return
        if not first:  # the program it ran is gone: what was armed there goes
            for i in named:
                self._park(i, pid, None)
        try:
            env = _environ(pid)
            auxv = _auxv(pid)
            info = images.image(exe)
            from ..symbols.elf import load_bias
            bias = load_bias(pid, exe)
        except (OSError, ValueError, LookupError) as exc:
            for i in named:
                self._park(i, pid, f"cannot read the new program {exe}: {exc}")
            self._note(f"cannot resolve names in {exe} (pid {pid}): {exc}")
            self._first_exec.set()
            return
        if info.elfclass != 64 or (abi.MACHINE == "x86_64" and info.machine != "EM_X86_64"):
            for i in named:
                self._park(i, pid, f"{exe} is a {info.elfclass}-bit {info.machine} program")
                self._why[i] = (f"watch '{self.specs[i].text}': names are resolved in "
                                f"64-bit programs of this machine only, and {exe} is "
                                f"{info.elfclass}-bit: watch its address instead")
            self._first_exec.set()
            return
        statics = static_scope(exe, env)
        ldso = info.interp
        pending = []
        for i in named:
            spec = self.specs[i]
            try:
                res = statics.resolve(spec)
            except (SymbolNotFound, PerfbpError) as exc:
                res = None
                if spec.object is not None and statics.find(spec) is not None:
                    self._note(f"watch '{spec.text}' in {exe}: {exc}")
            if res is not None and res.obj == exe:
                self._bind(i, pid, exe, shifted(res, bias))
            elif res is not None and ldso and res.obj == ldso and auxv.get(_AT_BASE):
                self._bind(i, pid, exe, shifted(res, auxv[_AT_BASE]))
            elif info.interp:
                pending.append(i)
                self._park(i, pid, None)
            else:
                self._park(i, pid, f"{exe} does not define it")
                old = self._displaced.pop(i, None)
                if old is not None:
                    self._note(f"watch '{spec.text}': disarmed in pid {pid}: {exe} "
                               f"replaced {old} and does not define the name", i)
        if pending:
            if abi.MACHINE != "x86_64" or info.machine != "EM_X86_64":
                for i in pending:
                    self._note(f"watch '{self.specs[i].text}': waiting for the libraries "
                               f"of {exe} is implemented for x86-64 programs only; attach "
                               f"with -p once they are loaded")
            else:
                self._loading[pid] = _Loading(exe, _mapped_range(pid, ldso), pending,
                                              [(exe, bias)])
        self._first_exec.set()

    def _on_syscall(self, tid: int) -> None:
        load = self._loading.get(tid)
        if load is None:
            return
        regs = abi.ptrace_regs(tid)
        rip = int(regs[abi.USER_REGS_RIP])
        if not load.ldso[0] <= rip < load.ldso[1]:
            # a system call from the program or its libraries: ld.so has mapped
            # everything it loads at start (initializers may run now)
            self._loaded(tid, load)
            return
        if int(regs[abi.USER_REGS_ORIG_RAX]) != _SYS_MMAP:
            return
        ret = int(regs[abi.USER_REGS_RAX])
        fd = int(regs[abi.USER_REGS_R8]) & 0xFFFFFFFF
        if ret == _ENOSYS or ret >= (1 << 64) - 4096 or fd == 0xFFFFFFFF:
            return  # the entry stop, a failed or an anonymous mmap
        try:
            path = os.readlink(f"/proc/{tid}/fd/{fd}")
            if not path.startswith("/") or path in load.seen:
                return
            info = images.image(path)
        except (OSError, ValueError):
            return
        load.seen.add(path)
        offset, vaddr = info.first_load
        if int(regs[abi.USER_REGS_R9]) != offset & ~(_PAGE - 1):
            return
        load.objects.append((path, ret - (vaddr & ~(_PAGE - 1))))
        scope = Scope(list(load.objects))
        for i in list(load.pending):
            spec = self.specs[i]
            try:
                res = scope.resolve(spec)
            except (SymbolNotFound, PerfbpError) as exc:
                load.pending.remove(i)
                self._note(f"watch '{spec.text}' in {load.exe}: {exc}")
                continue
            if res is not None:
                load.pending.remove(i)
                self._bind(i, tid, load.exe, res)

    def _loaded(self, pid: int, load: _Loading) -> None:
        del self._loading[pid]
        if self._armer is not None:
            with self._lock:
                if self._armer is not None:
                    self._armer.settle(pid)
        for i in load.pending:
            old = self._displaced.pop(i, None)
            if old is not None:
                self._note(f"watch '{self.specs[i].text}': disarmed in pid {pid}: "
                           f"{load.exe} replaced {old} and neither it nor its libraries "
                           f"define the name", i)


def _mapped_range(pid: int, path: "str | None") -> "tuple[int, int]":
    """The lowest and highest address of ``path``'s mappings in ``pid``
    ((0, 0) when it is not mapped)."""
    if not path:
        return 0, 0
    real = os.path.realpath(path)
    lo, hi = None, 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and os.path.realpath(parts[5].strip()) == real:
                start, end = (int(x, 16) for x in parts[0].split("-"))
                lo = start if lo is None else min(lo, start)
                hi = max(hi, end)
    return (lo or 0), hi


def _auxv(pid: int) -> "dict[int, int]":
    import struct

    with open(f"/proc/{pid}/auxv", "rb") as f:
        raw = f.read()
    out = {}
    for i in range(0, len(raw) - 15, 16):
        key, value = struct.unpack_from("<QQ", raw, i)
        if key == 0:
            break
        out[key] = value
    return out


def _environ(pid: int) -> "dict[str, str]":
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    out = {}
    for item in raw.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            out[k.decode(errors="replace")] = v.decode(errors="replace")
    return out


# -- preparing a run -------------------------------------------------------------------
def plan_names(specs: "Sequence[WatchSpec]", argv: "Sequence[str]", exe: str,
               env: "dict[str, str] | None" = None
               ) -> "tuple[list[Watch], list[Resolution | None], list[str]]":
    """Before launching: each watch as planned (its pieces), its static
    resolution in the first program (or None), and how it is armed
    (``"exec"`` or ``"bind"``); see :func:`perfbp.symbols.resolve.resolve_for_command`.

    Raises:
        SymbolNotFound, InvalidBreakpoint: a name no candidate defines, a
            thread-local name, a wrong member.
    """
    try:
        first = images.image(exe)
    except (OSError, ValueError):
        first = None
    ws: list[Watch] = []
    initial: list[Resolution | None] = []
    arming: list[str] = []
    for s, (res, k) in zip(specs, resolve_for_command(specs, argv, exe, env)):
        if isinstance(res, Watch):  # an address, or a kernel symbol
            ws.append(res)
            initial.append(None)
            arming.append("exec")
        elif res is None:  # a script: what it runs is not on its command line
            ws.append(Watch.from_spec(s.resolved(0, 8)))
            initial.append(None)
            arming.append("bind")
        else:
            ws.append(res.watch)
            mine = k == 0 and first is not None
            initial.append(res if mine else None)
            # a non-PIE program's own address is known before it runs
            arming.append("exec" if mine and res.obj == exe and not first.shared else "bind")
    return ws, initial, arming


def prepare_run(watches: "Sequence", target, command: "Sequence[str] | None",
                multiplex: "float | None", trace: bool = True):
    """Everything before arming, shared by count, record and top: resolve
    the names (statically, for a command: it is then followed), plan the
    watches (refusing what does not fit unless ``multiplex`` lets them take
    turns), and fork the command, stopped before exec.

    ``target`` and ``command`` together (CPUs only: perf's ``-a -- CMD``)
    watch those CPUs for as long as the command runs: the watches are
    addresses (or kernel names), armed at once on the CPUs, and the command
    is launched (and traced, unless ``trace`` is False, only to keep it
    alive through debug exceptions that lost their status).

    Returns:
        ``(child or None, watches, plan, arming)``: ``arming[i]`` is
        ``"now"`` (a running target: arm at once), ``"image"`` (a name in a
        running process: arm at once, removed when the process execs),
        ``"exec"`` (inside the command's execve, at the watch's address) or
        ``"bind"`` (parked until the tracer binds it).

    Raises:
        PerfbpError: nothing is left running.
    """
    from ..kernel import launch, system
    from ..planning.planner import as_watches, plan
    from ..symbols.resolve import resolve, warn_read_only

    if (target is None) == (command is None) and (target is None or target.kind != "cpus"):
        raise PerfbpError("give exactly one target: a process, thread, CPUs, or a command "
                          "(or CPUs and a command: those CPUs while the command runs)")
    items = [parse(w) if isinstance(w, str) else w for w in watches]  # "counter", "0x40/8:rw"
    specs = [w for w in items if isinstance(w, WatchSpec)]
    named = any(s.symbol is not None for s in specs)
    if named and any(not isinstance(w, WatchSpec) for w in items):
        raise PerfbpError("give every watch as a spec when any of them names a symbol")
    if command is not None and not trace and any(
            s.symbol is not None and s.object != "kernel" for s in specs):
        raise InvalidBreakpoint.phrased("watches on names need perfbp to follow the command "
                                        "(ptrace): without it ({no_trace}) give addresses")
    child = None
    if command is not None:
        path = launch.resolve_command(list(command))
    if target is None:
        if named:
            ws, initial, arming = plan_names(specs, list(command), path)
            wspecs = [s if s.symbol is not None and s.object != "kernel" else None
                      for s in specs]
        else:
            ws = as_watches([Watch.from_spec(w) if isinstance(w, WatchSpec) else w
                             for w in items])
            initial, arming, wspecs = [None] * len(ws), ["exec"] * len(ws), [None] * len(ws)
    else:
        if not named:
            ws = as_watches([Watch.from_spec(w) if isinstance(w, WatchSpec) else w
                             for w in items])
        elif target.kind == "cpus" and all(s.object == "kernel" for s in specs if s.symbol):
            ws = resolve(specs, 0)
        elif target.kind == "cpus" and command is not None:
            raise PerfbpError("a name of the command cannot be watched on every CPU (-a or "
                              "-C with -- CMD): a CPU watch is one address in every process, "
                              "and the command's names are known only in the command; give "
                              "the address, or drop -a/-C to watch the command's own threads")
        elif target.kind == "cpus":
            raise PerfbpError.phrased("a watch on a symbol needs a process to look the symbol "
                                      "up in: give {process} or {command} (or give the "
                                      "address for {cpus})")
        else:
            pid = target.pid if target.kind == "process" else (
                system.thread_group(target.pid) or target.pid)
            ws = resolve(specs, os.getpid() if pid == 0 else pid)
        # a running process's names hold for its program: removed at exec
        arming = ["image" if isinstance(w, WatchSpec) and w.symbol is not None
                  and w.object != "kernel" else "now" for w in items]
        initial = wspecs = [None] * len(ws)  # CPUs while a command runs: it binds no name
    ws = warn_read_only(ws, target, path if command is not None else None)
    the_plan = plan(ws, target)
    if not the_plan.fits and multiplex is None:
        the_plan.require()
    if not the_plan.fits and len({w.exclude_kernel for w in ws}) > 1:
        raise PerfbpError("multiplexed watches must all count kernel-mode hits or all not")
    if command is not None:
        child = Follower(list(command), path, None, wspecs, initial, arming, trace)
    return child, ws, the_plan, arming


class ExecCheck:
    """Whether a running process execs while its names are watched (their
    events are then removed by the kernel: ``remove_on_exec``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = self._identity()
        self.after = None

    def _identity(self):
        try:
            st = os.stat(f"/proc/{self.pid}/exe")
            return st.st_dev, st.st_ino, os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return None

    def poll(self) -> None:
        """Look again (call it now and then while the process runs: a zombie
        has no program to compare)."""
        now = self._identity()
        if self.after is None and now is not None and self.before is not None \
                and now[:2] != self.before[:2]:
            self.after = now

    def note(self) -> "str | None":
        """A note when the process ran another program."""
        self.poll()
        if self.after is None:
            return None
        return (f"process {self.pid} exec'd {self.after[2]} (was {self.before[2]}): its "
                f"watches on names stopped counting then (the names belonged to the old "
                f"program; launch it with -- CMD to follow execs)")


def opening_watches(ws: "Sequence[Watch]", arming: "Sequence[str]") -> "list[Watch]":
    """What each watch's events open at: its address, or parked."""
    return [parked_like(w) if a == "bind" else w for w, a in zip(ws, arming)]

