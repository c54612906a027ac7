"""Counting hits: :class:`Counter` (one breakpoint on one target) and
:class:`Group` (several, opened all-or-nothing and read together)."""

from __future__ import annotations

import errno as E
import os
from typing import Callable, Iterable, Iterator

from . import abi, system
from .breakpoint import Breakpoint
from ..errors import InvalidBreakpoint, NoSuchProcess
from .arch import ACCESS_TYPES
from .arch import current as _current_arch
from .events import LEDGER as _LEDGER
from .events import (
    EventOptions,
    Target,
    close_event,
    error_from_oserror,
    make_attr,
    open_event_fd,
)
from .events import open_self as _open_self


def _close_all(fds: list[int]) -> None:
    while fds:
        close_event(fds.pop())


_THIS_THREAD = Target.this_thread()

_LEDGER_FDS = _LEDGER._by_fd
_TASK_SIZE_MAX = _current_arch().task_size_max
_OPTIONS: "dict[tuple, EventOptions]" = {}


def _options(enabled: bool, exclude_kernel: "bool | None", enable_on_exec: bool) -> EventOptions:
    key = (enabled, exclude_kernel, enable_on_exec)
    opts = _OPTIONS.get(key)
    if opts is None:
        opts = _OPTIONS[key] = EventOptions(enabled=enabled, exclude_kernel=exclude_kernel,
                                            enable_on_exec=enable_on_exec)
    return opts


_ENABLED = _options(True, None, False)
_DISABLED = _options(False, None, False)


def target_for(pid: int, cpu: int, process: bool, inherit: "bool | None") -> Target:
    """The :class:`Target` that ``Counter``'s kernel-style arguments describe."""
    if pid == 0 and cpu == -1 and not process and not inherit:
        return _THIS_THREAD
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

    ``on_open(fd)`` is called as soon as each event is open, before the next
    one opens (a condition's program is attached there: the events the
    kernel makes for the threads a thread starts copy the program its event
    has when they are made, not one attached later).

    Example::

        with Counter(Breakpoint.write(addr, 8)) as c:
            work()
            print(c.read())

    Raises:
        NoBreakpointSlots, PermissionDenied, InvalidBreakpoint, NoSuchProcess,
        Unsupported: from the kernel's answer, with the reason and the fix.
    """

    __slots__ = ("_breakpoint", "target", "options", "_fds", "_tids", "_attrs", "_views",
                 "_enabled", "_attrs_enabled", "_fast", "_moved_to", "_on_open", "__weakref__")

    def __init__(self, breakpoint: Breakpoint, pid: int = 0, cpu: int = -1, *,
                 process: bool = False, inherit: "bool | None" = None,
                 target: "Target | None" = None, enabled: bool = True,
                 exclude_kernel: "bool | None" = None, enable_on_exec: bool = False,
                 options: "EventOptions | None" = None,
                 on_open: "Callable[[int], None] | None" = None) -> None:
        self._on_open = on_open
        if (pid == 0 and cpu == -1 and target is None and options is None and not process
                and not inherit and exclude_kernel is None and not enable_on_exec
                and type(breakpoint) is Breakpoint and on_open is None):
            # the calling thread with default options: the hot path, kept lean
            self._breakpoint = breakpoint
            self._fast = self._moved_to = None
            self.target = _THIS_THREAD
            self.options = options = _ENABLED if enabled else _DISABLED
            self._attrs = self._views = self._attrs_enabled = None
            self._enabled = enabled
            self._fds = []  # for __del__, should the open fail
            self._fds = [_open_self(breakpoint, options)]
            self._tids = [0]
            return
        if not isinstance(breakpoint, Breakpoint):
            raise TypeError(f"Counter needs a Breakpoint, not {type(breakpoint).__name__}")
        self._breakpoint = breakpoint
        self._fast = self._moved_to = None
        if target is None:
            target = (_THIS_THREAD if pid == 0 and cpu == -1 and not process and not inherit
                      else target_for(pid, cpu, process, inherit))
        self.target = target
        if options is None:
            if exclude_kernel is None and not enable_on_exec:
                options = _ENABLED if enabled else _DISABLED
            else:
                options = _options(enabled, exclude_kernel, enable_on_exec)
        self.options = options
        self._attrs = None  # built on the first move (MODIFY_ATTRIBUTES needs them)
        self._views = None
        self._attrs_enabled = None  # the enabled state the kept attrs say
        self._enabled = options.enabled and not options.enable_on_exec
        if target.kind == "thread":  # the common case, kept lean
            self._fds = []  # for __del__, should the open fail
            self._fds = [open_event_fd(breakpoint, target.pid,
                                       target.cpus[0] if target.cpus else -1,
                                       target.inherit, options, target)]
            self._tids = [target.pid]
            if on_open is not None:
                on_open(self._fds[0])
            return
        self._fds: list[int] = []
        self._tids: list[int] = []
        try:
            if target.kind == "cpus":
                for c in target.cpus:
                    self._open_one(-1, c)
            else:
                self._open_process(target.pid, target.cpus[0] if target.cpus else -1)
        except BaseException:
            _close_all(self._fds)
            raise

    def __del__(self) -> None:
        # the finalizer: a counter dropped without close() gives its
        # descriptors (and debug-register slots) back
        fds = getattr(self, "_fds", None)
        if fds:
            _close_all(fds)

    # -- opening ---------------------------------------------------------------
    def _open_one(self, pid: int, cpu: int) -> None:
        self._fds.append(open_event_fd(self.breakpoint, pid, cpu, self.target.inherit,
                                       self.options, self.target))
        self._tids.append(pid)
        if self._on_open is not None:  # at once: threads it makes inherit what it has
            self._on_open(self._fds[-1])

    def _open_process(self, pid: int, cpu: int) -> None:
        """One event per thread, with inherit; repeat until no new thread
        appears, so a thread started between listing and opening is caught."""
        seen: set[int] = set()
        while True:
            try:
                tids = system.thread_ids(pid)
            except ProcessLookupError:
                raise NoSuchProcess.phrased(
                    f"cannot watch process {pid}: it does not exist (or has exited). "
                    f"Check the id with ps, or start the program with {{command}}.",
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
    def _closed(self):
        return ValueError(f"{self!r} is closed: open a new Counter")

    def read(self) -> int:
        """The number of hits so far (inherited children's hits included).

        Raises:
            ValueError: the counter is closed.
        """
        fds = self._fds
        if len(fds) == 1:
            return int.from_bytes(os.read(fds[0], 8), "little")
        if not fds:
            raise self._closed()
        total = 0
        for fd in fds:
            total += abi.read_count(fd)
        return total

    def read_per_task(self) -> dict[int, int]:
        """Hits per opened task (thread id, or -1 per CPU target), children
        folded into the thread they were inherited from."""
        if not self._fds:
            raise self._closed()
        out: dict[int, int] = {}
        for tid, fd in zip(self._tids, self._fds):
            out[tid] = out.get(tid, 0) + abi.read_count(fd)
        return out

    def read_per_cpu(self) -> dict[int, int]:
        """Hits per CPU for a CPU target."""
        if self.target.kind != "cpus":
            raise InvalidBreakpoint("read_per_cpu() needs a CPU target")
        if not self._fds:
            raise self._closed()
        return {cpu: abi.read_count(fd) for cpu, fd in zip(self.target.cpus, self._fds)}

    def _each(self, fn) -> None:
        if not self._fds:
            raise self._closed()
        try:
            for fd in self._fds:
                fn(fd)
        except OSError as exc:
            raise error_from_oserror(exc, bp=self.breakpoint, target=self.target,
                                     action="control") from None

    def enable(self) -> None:
        """Start (or resume) counting."""
        fds = self._fds
        if len(fds) == 1:
            try:
                abi.enable(fds[0])
            except OSError as exc:
                raise error_from_oserror(exc, bp=self.breakpoint, target=self.target,
                                         action="control") from None
        else:
            self._each(abi.enable)
        self._enabled = True
        self._fast = None  # the kept attr says disabled: the next move says enabled

    def disable(self) -> None:
        """Pause counting.  The slot stays reserved until :meth:`close`."""
        fds = self._fds
        if len(fds) == 1:
            try:
                abi.disable(fds[0])
            except OSError as exc:
                raise error_from_oserror(exc, bp=self.breakpoint, target=self.target,
                                         action="control") from None
        else:
            self._each(abi.disable)
        self._enabled = False
        self._fast = None

    def reset(self) -> None:
        """Set the count back to zero."""
        self._each(abi.reset)

    @property
    def enabled(self) -> bool:
        return self._enabled

    def move(self, address: int, length: "int | None" = None) -> None:
        """Re-target the breakpoint in place (``PERF_EVENT_IOC_MODIFY_ATTRIBUTES``).

        The slot is kept (no ENOSPC possible), the count is kept, and the
        enabled state is kept.  On x86 the kernel reinstalls the debug register
        of an enabled event: about 1.5 us in C here (half a microsecond for a
        disabled one), against several for a close and re-open.

        Raises:
            InvalidBreakpoint: the new range breaks an architecture rule, or
                moves between user and kernel space.
            ValueError: the counter is closed.
        """
        fast = self._fast
        if fast is not None and length is None and not address % fast[3] \
                and 0 <= address <= fast[4]:
            # the hot path of re-pointing one user-space watch (what retarget
            # left in _fast): the same length and type, an aligned address; one
            # field changes in the kept attr; the Breakpoint is made when asked
            attr = fast[0]
            attr.bp_addr = address
            try:
                fast[2](fast[1], attr, fast[5])
            except OSError:
                attr.bp_addr = self.breakpoint[0]  # the general path explains
            else:
                self._moved_to = address
                return
        if not self._fds:
            raise self._closed()
        bp = self.breakpoint
        self.retarget(Breakpoint(address, bp[1] if length is None else length, bp[2]))

    def retarget(self, new_bp: Breakpoint) -> None:
        """Point the event at another breakpoint — address, length and access
        type — in place, like :meth:`move` (the type may change within the
        slot's pool: any change on x86)."""
        if not self._fds:
            raise self._closed()
        old_bp = self.breakpoint
        self._fast = None
        if (new_bp[0] + new_bp[1] - 1 >= _TASK_SIZE_MAX) != (old_bp[0] + old_bp[1] - 1 >= _TASK_SIZE_MAX) \
                and self.options.exclude_kernel is None:
            raise InvalidBreakpoint(
                f"cannot move a watch from {old_bp.address:#x} to "
                f"{new_bp.address:#x}: it would cross between user and kernel space; "
                f"close it and open a new Counter", address=new_bp.address)
        attrs = self._attrs
        if attrs is None:
            # the attr each event was opened with, as MODIFY_ATTRIBUTES wants it
            attrs = self._attrs = [make_attr(old_bp, self.target.inherit, self.options)
                                   for _ in self._fds]
            self._views = [abi.attr_view(a) for a in attrs]
        disabled = 0 if self._enabled else 1
        bp_type = ACCESS_TYPES[new_bp[2]]
        same_shape = new_bp[1] == old_bp[1] and new_bp[2] == old_bp[2]
        done = 0
        try:
            for fd, attr, view in zip(self._fds, attrs, self._views):
                attr.bp_addr = new_bp[0]
                if not same_shape:
                    attr.bp_len = new_bp[1]
                    attr.bp_type = bp_type
                if self._attrs_enabled is not self._enabled:
                    attr.disabled = disabled
                try:
                    abi.modify_attributes(fd, attr, view)
                except OSError as exc:
                    # the kernel clears attr.enable_on_exec when exec enables
                    # the event (event_enable_on_exec), and MODIFY_ATTRIBUTES
                    # wants the attr as the kernel now holds it
                    if exc.errno != E.EINVAL or not attr.enable_on_exec:
                        raise
                    attr.enable_on_exec = 0
                    abi.modify_attributes(fd, attr, view)
                done += 1
        except OSError as exc:
            for attr in attrs[done:]:  # the events not moved keep their attr
                attr.bp_addr, attr.bp_len, attr.bp_type = old_bp[0], old_bp[1], ACCESS_TYPES[old_bp[2]]
            if exc.errno == E.ENOTTY:
                from ..errors import Unsupported
                raise Unsupported("this kernel cannot move a breakpoint in place "
                                  "(PERF_EVENT_IOC_MODIFY_ATTRIBUTES needs Linux 4.17+)",
                                  errno=E.ENOTTY) from None
            raise error_from_oserror(exc, bp=new_bp, target=self.target,
                                     action="move to") from None
        self._breakpoint = new_bp
        self._moved_to = None
        self._attrs_enabled = self._enabled
        ln = new_bp[1]
        if len(attrs) == 1 and new_bp[2] != "x" and new_bp[0] + ln - 1 < _TASK_SIZE_MAX:
            # what move() needs to re-point it again: attr, fd, the call, length,
            # the highest address the length allows in user space, the view
            self._fast = (attrs[0], self._fds[0], abi.modify_attributes, ln,
                          _TASK_SIZE_MAX - ln, self._views[0])
        else:
            self._fast = None

    @property
    def breakpoint(self) -> Breakpoint:
        """Where the counter points now."""
        moved_to = self._moved_to
        if moved_to is not None:
            bp = self._breakpoint
            self._breakpoint = bp = tuple.__new__(Breakpoint, (moved_to, bp[1], bp[2]))
            self._moved_to = None
            return bp
        return self._breakpoint

    @property
    def fds(self) -> tuple[int, ...]:
        """The event file descriptors (one per thread or CPU opened)."""
        return tuple(self._fds)

    @property
    def closed(self) -> bool:
        return not self._fds

    def close(self) -> None:
        """Close the events and free their slots.  Safe to call twice."""
        self._fast = None  # its descriptor is about to be closed (and reused)
        fds = self._fds
        if len(fds) == 1:
            fd = fds.pop()
            _LEDGER_FDS.pop(fd, None)
            try:
                os.close(fd)
            except OSError:
                pass
        else:
            _close_all(fds)

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
                # a Breakpoint is a NamedTuple: test for it, not for tuple
                bp, tgt = (item, default_target) if isinstance(item, Breakpoint) else item
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
