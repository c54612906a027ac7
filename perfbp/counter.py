"""Counting hits: :class:`Counter` (one breakpoint on one target) and
:class:`Group` (several, opened all-or-nothing and read together)."""

from __future__ import annotations

import errno as E
import weakref
from typing import Iterable, Iterator

from . import abi, system
from .breakpoint import Breakpoint
from .errors import InvalidBreakpoint, NoSuchProcess, PerfbpError
from .events import (
    DEFAULT_OPTIONS,
    EventOptions,
    Target,
    close_event,
    error_from_oserror,
    open_event,
)


def _close_all(fds: list[int]) -> None:
    while fds:
        close_event(fds.pop())


def target_for(pid: int, cpu: int, process: bool, inherit: "bool | None") -> Target:
    """The :class:`Target` that ``Counter``'s kernel-style arguments describe."""
    if pid == -1:
        return Target.cpus(None if cpu < 0 else [cpu])
    if process:
        if pid <= 0:
            raise InvalidBreakpoint("process=True needs a process id (pid > 0)")
        return Target.process(pid, cpu=cpu)
    return Target.thread(pid, cpu=cpu, inherit=bool(inherit))


class Counter:
    """One breakpoint on one target, counting hits exactly.

    The arguments follow ``perf_event_open(2)``: ``pid=0`` is the calling
    thread, ``pid=TID`` one thread, ``pid=-1`` with ``cpu=N`` everything on CPU
    N, and ``pid=-1, cpu=-1`` every online CPU.  ``process=True`` makes
    ``pid`` a process: every thread it has now, and through ``inherit`` every
    thread and child process it starts later.  Or pass a
    :class:`~perfbp.Target`.

    Hits in kernel mode are excluded for user-space addresses (perf's ``:u``),
    so the count is the number of user-space accesses, exactly.

    The breakpoint's debug-register slot is reserved from the moment the
    counter opens until it is closed, even while disabled: that is how the
    kernel accounts slots.

    Example::

        with Counter(Breakpoint.write(addr, 8)) as c:
            work()
            print(c.read())

    Raises:
        NoBreakpointSlots, PermissionDenied, InvalidBreakpoint, NoSuchProcess,
        Unsupported: from the kernel's answer, with the reason and the fix.
    """

    def __init__(self, breakpoint: Breakpoint, pid: int = 0, cpu: int = -1, *,
                 process: bool = False, inherit: "bool | None" = None,
                 target: "Target | None" = None, enabled: bool = True,
                 exclude_kernel: "bool | None" = None, enable_on_exec: bool = False,
                 options: "EventOptions | None" = None) -> None:
        if not isinstance(breakpoint, Breakpoint):
            raise TypeError(f"Counter needs a Breakpoint, not {type(breakpoint).__name__}")
        self.breakpoint = breakpoint
        self.target = target if target is not None else target_for(pid, cpu, process, inherit)
        if options is None:
            if enabled and exclude_kernel is None and not enable_on_exec:
                options = DEFAULT_OPTIONS
            else:
                options = EventOptions(enabled=enabled, exclude_kernel=exclude_kernel,
                                       enable_on_exec=enable_on_exec)
        self.options = options
        self._fds: list[int] = []
        self._attrs: list = []
        self._tids: list[int] = []
        self._enabled = options.enabled and not options.enable_on_exec
        self._finalizer = weakref.finalize(self, _close_all, self._fds)
        try:
            self._open()
        except BaseException:
            self._finalizer()
            raise

    # -- opening ---------------------------------------------------------------
    def _open_one(self, pid: int, cpu: int) -> None:
        fd, attr = open_event(self.breakpoint, pid, cpu, self.target.inherit,
                              self.options, self.target)
        self._fds.append(fd)
        self._attrs.append(attr)
        self._tids.append(pid)

    def _open(self) -> None:
        t = self.target
        if t.kind == "thread":
            self._open_one(t.pid, t.cpus[0] if t.cpus else -1)
        elif t.kind == "cpus":
            for cpu in t.cpus:
                self._open_one(-1, cpu)
        else:
            self._open_process(t.pid, t.cpus[0] if t.cpus else -1)

    def _open_process(self, pid: int, cpu: int) -> None:
        """One event per thread, with inherit; repeat until no new thread
        appears, so a thread started between listing and opening is caught."""
        seen: set[int] = set()
        while True:
            try:
                tids = system.thread_ids(pid)
            except ProcessLookupError:
                raise NoSuchProcess(
                    f"cannot watch process {pid}: it does not exist (or has exited). "
                    f"Check the id with ps, or start the program with -- CMD.",
                    pid=pid) from None
            new = [t for t in tids if t not in seen]
            if not new:
                break
            for tid in new:
                seen.add(tid)
                try:
                    self._open_one(tid, cpu)
                except NoSuchProcess:
                    if tid == pid:
                        raise
                    # the thread ended between listing and opening: nothing to watch

    # -- the counter's verbs ---------------------------------------------------------
    def _live(self) -> None:
        if not self._fds:
            raise ValueError(f"{self!r} is closed: open a new Counter")

    def read(self) -> int:
        """The number of hits so far (inherited children's hits included).

        Raises:
            ValueError: the counter is closed.
        """
        self._live()
        total = 0
        for fd in self._fds:
            total += abi.read_count(fd)
        return total

    def read_per_task(self) -> dict[int, int]:
        """Hits per opened task (thread id, or -1 per CPU target), children
        folded into the thread they were inherited from."""
        self._live()
        out: dict[int, int] = {}
        for tid, fd in zip(self._tids, self._fds):
            out[tid] = out.get(tid, 0) + abi.read_count(fd)
        return out

    def read_per_cpu(self) -> dict[int, int]:
        """Hits per CPU for a CPU target."""
        if self.target.kind != "cpus":
            raise InvalidBreakpoint("read_per_cpu() needs a CPU target")
        self._live()
        return {cpu: abi.read_count(fd) for cpu, fd in zip(self.target.cpus, self._fds)}

    def _each(self, fn) -> None:
        self._live()
        try:
            for fd in self._fds:
                fn(fd)
        except OSError as exc:
            raise error_from_oserror(exc, bp=self.breakpoint, target=self.target,
                                     action="control") from None

    def enable(self) -> None:
        """Start (or resume) counting."""
        self._each(abi.enable)
        self._enabled = True

    def disable(self) -> None:
        """Pause counting.  The slot stays reserved until :meth:`close`."""
        self._each(abi.disable)
        self._enabled = False

    def reset(self) -> None:
        """Set the count back to zero."""
        self._each(abi.reset)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def move(self, address: int, length: "int | None" = None) -> None:
        """Re-target the breakpoint in place (``PERF_EVENT_IOC_MODIFY_ATTRIBUTES``).

        The slot is kept (no ENOSPC possible), the count is kept, and the
        enabled state is kept.  On x86 this costs about half a microsecond in C,
        against several for a close and re-open.

        Raises:
            InvalidBreakpoint: the new range breaks an architecture rule, or
                moves between user and kernel space.
        """
        self._live()
        self.retarget(self.breakpoint.moved(address, length))

    def retarget(self, new_bp: Breakpoint) -> None:
        """Point the event at another breakpoint — address, length and access
        type — in place, like :meth:`move` (the type may change within the
        slot's pool: any change on x86)."""
        self._live()
        if new_bp.is_kernel() != self.breakpoint.is_kernel() and self.options.exclude_kernel is None:
            raise InvalidBreakpoint(
                f"cannot move a watch from {self.breakpoint.address:#x} to "
                f"{new_bp.address:#x}: it would cross between user and kernel space; "
                f"close it and open a new Counter", address=new_bp.address)
        new_attrs = []
        for attr in self._attrs:
            new = abi.copy_attr(attr)
            new.bp_addr = new_bp.address
            new.bp_len = new_bp.length
            new.bp_type = new_bp.bp_type
            new.disabled = 0 if self._enabled else 1
            new_attrs.append(new)
        try:
            for fd, new in zip(self._fds, new_attrs):
                try:
                    abi.modify_attributes(fd, new)
                except OSError as exc:
                    # the kernel clears attr.enable_on_exec when exec enables
                    # the event (event_enable_on_exec), and MODIFY_ATTRIBUTES
                    # wants the attr as the kernel now holds it
                    if exc.errno != E.EINVAL or not new.enable_on_exec:
                        raise
                    new.enable_on_exec = 0
                    abi.modify_attributes(fd, new)
        except OSError as exc:
            if exc.errno == E.ENOTTY:
                from .errors import Unsupported
                raise Unsupported("this kernel cannot move a breakpoint in place "
                                  "(PERF_EVENT_IOC_MODIFY_ATTRIBUTES needs Linux 4.17+)",
                                  errno=E.ENOTTY) from None
            raise error_from_oserror(exc, bp=new_bp, target=self.target,
                                     action="move to") from None
        self._attrs = new_attrs
        self.breakpoint = new_bp

    @property
    def fds(self) -> tuple[int, ...]:
        """The event file descriptors (one per thread or CPU opened)."""
        return tuple(self._fds)

    @property
    def closed(self) -> bool:
        return not self._fds

    def close(self) -> None:
        """Close the events and free their slots.  Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("enabled" if self._enabled else "disabled")
        return f"<Counter {self.breakpoint.spec} on {self.target.describe()} {state}>"


class Group:
    """Several counters, possibly on different targets, opened all-or-nothing
    and read together.

    This is not a kernel event group (which must share one task and CPU): it
    is perfbp's set of counters.  If any counter fails to open, the ones
    already open are closed and the error is raised, so nothing is left
    holding a slot.

    Example::

        with Group([Breakpoint.write(a, 8), Breakpoint.write(b, 4)],
                   target=Target.process(pid)) as g:
            time.sleep(1)
            print(g.read())          # [hits at a, hits at b]
    """

    def __init__(self, watches: "Iterable[Breakpoint | tuple[Breakpoint, Target]]" = (),
                 *, target: "Target | None" = None, enabled: bool = True,
                 options: "EventOptions | None" = None) -> None:
        self.counters: list[Counter] = []
        default_target = target if target is not None else Target.this_thread()
        try:
            for item in watches:
                bp, tgt = item if isinstance(item, tuple) else (item, default_target)
                self.counters.append(Counter(bp, target=tgt, enabled=enabled, options=options))
        except BaseException:
            self.close()
            raise

    def add(self, counter: Counter) -> Counter:
        self.counters.append(counter)
        return counter

    def read(self) -> list[int]:
        """Hits of every counter, in order."""
        return [c.read() for c in self.counters]

    def enable(self) -> None:
        for c in self.counters:
            c.enable()

    def disable(self) -> None:
        for c in self.counters:
            c.disable()

    def reset(self) -> None:
        for c in self.counters:
            c.reset()

    def close(self) -> None:
        for c in self.counters:
            c.close()

    def __iter__(self) -> Iterator[Counter]:
        return iter(self.counters)

    def __len__(self) -> int:
        return len(self.counters)

    def __getitem__(self, i: int) -> Counter:
        return self.counters[i]

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Group of {len(self.counters)} counters>"
