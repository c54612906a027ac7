"""A watch's values tested in the kernel on every hit: :class:`ValueProgram`.

One :class:`ValueProgram` is one watch's BPF array map (its
:class:`~perfbp.kernel.condition.Tally`) and the program of
:func:`~perfbp.kernel.condition.hit_program`, loaded with ``bpf(2)``.  It is
attached to each of the watch's events (:meth:`ValueProgram.attach`); events
the kernel makes from those for new threads and forked children inherit it,
and all of them share the map.  The program runs on every overflow of a
sampling event: open the events with ``sample_period`` 1 (a counting event
never runs it).  It runs in the debug-exception handler after the kernel has
counted the hit, so the event's count stays every hit; the sample is written
only when the program says so (``emit``, and the condition held).

Values in samples (``values=True``): the breakpoint writes no sample of its
own; a matching hit's sample is written by the program, with
``bpf_perf_event_output``, into a ``bpf-output`` software event of the CPU it
runs on (one per CPU, in the program's ``BPF_MAP_TYPE_PERF_EVENT_ARRAY``;
see :meth:`ValueProgram.add_output`).  The kernel fills that sample's fields
from the hit's registers (ip, thread, time, CPU, call stack) as it would the
breakpoint's, and its PERF_SAMPLE_RAW field holds ``old`` and ``new``
(:data:`~perfbp.kernel.condition.VALUES_RAW`).  A
:class:`~perfbp.kernel.sampling.Sampler` given such programs opens the
output events, shares its rings with them and counts their samples and
losses as the watch's.

What it needs: a kernel with ``bpf(2)`` (CONFIG_BPF_SYSCALL) and BPF on perf
events (CONFIG_BPF_EVENTS), and CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN):
tracing programs are never allowed to unprivileged users.  Where one is
missing the error says which, in one line.
"""

from __future__ import annotations

import ctypes
import errno as E
import os

from . import _uapi, abi, system
from .bpf import encode
from .breakpoint import Breakpoint
from .condition import LAST_AT, TALLY, Condition, Tally, hit_program, parse
from ..errors import PerfbpError, PermissionDenied, Unsupported

import struct

_KEY = bytes(4)  # the one entry's key: u32 0
_U32 = struct.Struct("<I")


class ValueProgram:
    """One watch's program and map.

    Example::

        bp = Breakpoint.write(addr, 8)
        with ValueProgram.for_breakpoint(bp, "new == 0", emit=False) as prog, \\
                Counter(bp, options=EventOptions(enabled=False, sample_period=1)) as c:
            for fd in c.fds:
                prog.attach(fd)
            c.enable()
            ...
            print(c.read(), "hits,", prog.tally().matched, "wrote 0")

    Args:
        condition: the condition (text or parsed), or None: every hit
            matches (values are kept, no sample is dropped).
        length: the watched length, 1, 2, 4 or 8 bytes.
        emit: the program lets the kernel write a sample for each matching
            hit (for a :class:`~perfbp.kernel.sampling.Sampler`); False: it
            never does (counting).
        values: the program writes each matching hit's sample itself, with
            its values, into the output events given to :meth:`add_output`
            (``emit`` is then ignored).
        kernel: the watched address is a kernel one (read with
            ``bpf_probe_read_kernel``).
        name: the map's and program's name in the kernel (``bpftool`` shows
            it), cut to 15 characters.

    Raises:
        InvalidCondition: the condition cannot be read, or a number does not
            fit the length.
        PermissionDenied: no CAP_BPF and CAP_PERFMON (EPERM).
        Unsupported: the kernel has no BPF, or refuses the program.
    """

    def __init__(self, condition: "Condition | str | None", length: int, *,
                 emit: bool = True, kernel: bool = False, name: str = "perfbp",
                 values: bool = False) -> None:
        if isinstance(condition, str):
            condition = parse(condition)
        self.condition = condition
        self.length = length
        self.emit = emit
        self.values = values
        self.map_fd = -1
        self.prog_fd = -1
        self.output_fd = -1
        addr_offset = _uapi.BPF_PERF_EVENT_DATA_ADDR.get(abi.MACHINE)
        if addr_offset is None:
            raise Unsupported(f"values on every hit are implemented for "
                              f"{', '.join(_uapi.BPF_PERF_EVENT_DATA_ADDR)}, not {abi.MACHINE}")
        if condition is not None:
            condition.check(length)
        self._mapped = None
        try:
            # mapped into this process: ``last`` is set with one 8-byte store,
            # never by rewriting the counts the program adds to atomically
            self.map_fd = abi.bpf_map_create(_uapi.BPF_MAP_TYPE_ARRAY, len(_KEY), TALLY.size,
                                             1, map_flags=_uapi.BPF_F_MMAPABLE, name=name)
            self._mapped = abi.bpf_map_mmap(self.map_fd)
        except OSError as exc:
            self.close()
            raise bpf_error(exc, "make the map that keeps the values of", self) from None
        if values:
            try:
                self.output_fd = abi.bpf_map_create(_uapi.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4,
                                                    max(system.possible_cpus()) + 1, name=name)
            except OSError as exc:
                self.close()
                raise bpf_error(exc, "make the map of the output events of", self) from None
        try:
            insns = hit_program(condition, self.map_fd, length, emit=emit,
                                addr_offset=addr_offset, kernel=kernel,
                                output_map_fd=self.output_fd if values else None)
        except BaseException:
            self.close()
            raise
        self.insns = insns
        try:
            self.prog_fd = abi.bpf_prog_load(_uapi.BPF_PROG_TYPE_PERF_EVENT, encode(insns),
                                             name=name)
        except OSError as exc:
            self.close()
            raise bpf_error(exc, "load the program that tests", self) from None

    @classmethod
    def for_breakpoint(cls, bp: Breakpoint, condition: "Condition | str | None", *,
                       emit: bool = True, name: str = "perfbp",
                       values: bool = False) -> "ValueProgram":
        """The program for ``bp``: its length, user or kernel address."""
        return cls(condition, bp.length, emit=emit, kernel=bp.is_kernel(), name=name,
                   values=values)

    def add_output(self, cpu: int, fd: int) -> None:
        """Have the program write the samples of hits on ``cpu`` into the
        ``bpf-output`` event ``fd`` (open on that CPU, every task).  A hit on
        a CPU without one is counted as matched and writes nothing.

        Raises:
            PerfbpError: the kernel refused.
        """
        try:
            abi.bpf_map_update_elem(self.output_fd, _U32.pack(cpu), _U32.pack(fd))
        except OSError as exc:
            raise bpf_error(exc, f"give CPU {cpu}'s output event to the program that tests",
                            self) from None

    def describe(self) -> str:
        if self.condition is None:
            return f"{self.length}-byte values"
        text = str(self.condition)
        return f"{text if len(text) <= 60 else text[:57] + '...'!r} on {self.length}-byte values"

    def attach(self, fd: int) -> None:
        """Run the program on every hit of the event ``fd`` (a sampling
        event, ``sample_period`` 1; attach before enabling it, or the hits
        before are not seen).

        Raises:
            PerfbpError: the kernel refused (the event has a program already,
                or is not a sampling event of this process's).
        """
        try:
            abi.set_bpf(fd, self.prog_fd)
        except OSError as exc:
            raise bpf_error(exc, "attach to a breakpoint the program that tests", self) from None

    def tally(self) -> Tally:
        """What the program has seen so far (read from the map)."""
        if self._mapped is None:
            raise PerfbpError(f"the program that tests {self.describe()} is closed")
        return Tally.unpack(self._mapped[:TALLY.size])

    def set_last(self, value: int) -> None:
        """Make ``value`` the ``old`` of the next hit (the value at the time
        the watch is armed or moved): one 8-byte store into the mapped map,
        so the counts the program adds to meanwhile are kept."""
        if self._mapped is None:
            raise PerfbpError(f"the program that tests {self.describe()} is closed")
        ctypes.c_uint64.from_buffer(self._mapped, LAST_AT).value = value

    def close(self) -> None:
        """Close the program and the map (events they are attached to keep
        them until they close).  Safe to call twice."""
        if getattr(self, "_mapped", None) is not None:
            self._mapped.close()
            self._mapped = None
        for fd in (self.prog_fd, self.map_fd, self.output_fd):
            if fd >= 0:
                abi.close(fd)
        self.prog_fd = self.map_fd = self.output_fd = -1

    def __enter__(self) -> "ValueProgram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        how = "writes values" if self.values else "emits" if self.emit else "counts"
        return f"<ValueProgram {self.describe()}, {how}>"


def read_value(pid: int, address: int, length: int) -> "int | None":
    """The ``length``-byte value (unsigned, little-endian) at ``address`` in
    process ``pid`` now, from ``/proc/PID/mem``; None when it cannot be read
    (no such process, not mapped, not allowed)."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        raw = os.pread(fd, length, address)
    except (OSError, OverflowError):
        return None
    finally:
        os.close(fd)
    return int.from_bytes(raw, "little") if len(raw) == length else None


def unavailable() -> "PerfbpError | None":
    """Why values cannot be tested in the kernel here, or None when they
    can: a program is loaded (and closed again) to find out, as perfbp
    check does."""
    try:
        ValueProgram("new == 0", 8, name="perfbp_check").close()
    except PerfbpError as exc:
        return exc
    return None


def bpf_error(exc: OSError, action: str, prog: ValueProgram) -> PerfbpError:
    """The error for a refused ``bpf(2)`` or ``PERF_EVENT_IOC_SET_BPF``: what
    was asked, what is missing, and what to do, in one line."""
    code = exc.errno or E.EIO
    asked = f"cannot {action} {prog.describe()} in the kernel"
    log = getattr(exc, "log", "")
    if code == E.EPERM or (code == E.EACCES and not log):
        return PermissionDenied(f"{asked} ({E.errorcode[code]}): {_missing_capabilities()}",
                                errno=code)
    if code == E.ENOSYS:
        return Unsupported(f"{asked}: this kernel has no bpf(2) system call (built "
                           f"without CONFIG_BPF_SYSCALL); watch without a condition",
                           errno=code)
    if log:
        # the log ends with the verifier's statistics: the reason is the
        # last line before them
        stats = ("processed ", "verification time", "stack depth", "max_states_per_insn")
        lines = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith(stats)]
        last = lines[-1][:200] if lines else ""
        advice = ("the program is too long for the verifier: write a shorter condition"
                  if code == E.E2BIG or "too large" in log or "too complex" in log
                  else "Linux 5.5 or later is needed")
        return Unsupported(f"{asked}: the kernel's verifier refused it "
                           f"({E.errorcode.get(code, code)}: {last}); {advice}",
                           errno=code, log=log)
    if code in (E.EINVAL, E.EOPNOTSUPP, E.ENOENT):
        return Unsupported(f"{asked}: the kernel refused ({E.errorcode.get(code, code)}); "
                           f"it needs BPF programs on perf events (CONFIG_BPF_EVENTS, "
                           f"Linux 5.5 or later)", errno=code)
    return PerfbpError(f"{asked}: {E.errorcode.get(code, code)}: {exc.strerror}", errno=code)


def _missing_capabilities() -> str:
    """Which of the capabilities a BPF program on a perf event needs this
    process lacks, and what to do."""
    caps = system.effective_capabilities()
    lacking = [system.CAP_NAMES[c] for c in (system.CAP_BPF, system.CAP_PERFMON)
               if not caps >> c & 1]
    if caps >> system.CAP_SYS_ADMIN & 1 or not lacking:
        why = "the kernel refused the BPF program for lack of privilege"
    else:
        why = f"this process lacks {' and '.join(lacking)}"
    return (f"testing values in the kernel needs a BPF program, which needs CAP_BPF and "
            f"CAP_PERFMON (or CAP_SYS_ADMIN), and {why}. Run as root, grant them "
            f"(setcap cap_bpf,cap_perfmon+ep), or watch without a condition")
