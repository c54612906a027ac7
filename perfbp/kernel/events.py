"""Opening breakpoint events: attr building, targets, and the one place that
turns the kernel's errno into perfbp's own exceptions with context.

This is the layer just above :mod:`perfbp.kernel.abi`: it knows what the user asked
(a :class:`~perfbp.kernel.breakpoint.Breakpoint` on a :class:`Target`) and so can say
why the kernel refused it and what to do instead.
"""

from __future__ import annotations

import errno as E
import os
import struct
import threading
from dataclasses import dataclass

from . import abi, system
from ._uapi import (PERF_COUNT_SW_BPF_OUTPUT, PERF_COUNT_SW_DUMMY, PERF_SAMPLE_STACK_USER,
                    PERF_TYPE_BREAKPOINT, PERF_TYPE_SOFTWARE)
from .arch import ACCESS_TYPES, current as _current_arch
from .breakpoint import Breakpoint
from ..errors import (
    InvalidBreakpoint,
    NoBreakpointSlots,
    NoSuchProcess,
    PerfbpError,
    PermissionDenied,
    Unsupported,
)


@dataclass(frozen=True)
class Target:
    """Where a breakpoint is armed: a thread, a whole process, or CPUs.

    Build one with the constructors::

        Target.this_thread()        # the calling thread
        Target.thread(4242)         # one thread (task) id
        Target.process(4242)        # every thread of a process, and the
                                    # threads and children it starts later
        Target.cpus([0, 1])         # everything running on CPUs 0 and 1
        Target.cpus()               # every online CPU (system-wide)

    Attributes:
        kind: ``"thread"``, ``"process"`` or ``"cpus"``.
        pid: thread id (0: the caller) or process id; -1 for CPU targets.
        cpus: the CPUs a thread/process target is restricted to (empty: any),
            or the CPUs of a CPU target.
        inherit: follow threads and processes the target creates later.
        name: what to call the target in messages (default: its command name).
    """

    kind: str
    pid: int = 0
    cpus: tuple[int, ...] = ()
    inherit: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        # the classmethod Target.cpus() shadows the field's default of ():
        # a Target built without cpus= must still get an empty tuple
        if not isinstance(self.cpus, tuple):
            object.__setattr__(self, "cpus", tuple(self.cpus) if isinstance(self.cpus, list) else ())

    @classmethod
    def this_thread(cls, *, inherit: bool = False) -> "Target":
        return cls("thread", 0, (), inherit)

    @classmethod
    def thread(cls, tid: int, *, cpu: int = -1, inherit: bool = False) -> "Target":
        return cls("thread", tid, () if cpu < 0 else (cpu,), inherit)

    @classmethod
    def process(cls, pid: int, *, cpu: int = -1, name: str = "") -> "Target":
        return cls("process", pid, () if cpu < 0 else (cpu,), True, name)

    @classmethod
    def cpus(cls, cpus: "list[int] | tuple[int, ...] | None" = None) -> "Target":
        return cls("cpus", -1, tuple(cpus) if cpus is not None else tuple(system.online_cpus()), False)

    def describe(self) -> str:
        """Plain words: ``process 4242``, ``thread 17``, ``CPUs 0,1``."""
        on = f" on CPU {self.cpus[0]}" if self.cpus and self.kind != "cpus" else ""
        if self.kind == "thread":
            return ("this thread" if self.pid == 0 else f"thread {self.pid}") + on
        if self.kind == "process":
            return f"process {self.pid} ({self.name or system.comm(self.pid)}){on}"
        if len(self.cpus) == 1:
            return f"CPU {self.cpus[0]}"
        return "CPUs " + ",".join(str(c) for c in self.cpus)


@dataclass(frozen=True)
class EventOptions:
    """How an event is opened, beyond what and where.

    Attributes:
        enabled: start counting at once (else call ``enable()``).
        enable_on_exec: start counting when the target calls exec.
        exclude_kernel: drop hits taken in kernel mode (perf's ``:u``).  None
            means: yes for user-space addresses (so counts are exact: the ELF
            loader's or a syscall's writes into the range do not count), no for
            kernel addresses.
        sample_period: 0 counts only; N makes every Nth hit a sample.
        sample_type, wakeup_events, sample_id_all, mmap, comm, task: sampling
            options for the ring buffer (see :mod:`perfbp.kernel.sampling`).
        exclude_callchain_kernel, exclude_callchain_user, sample_regs_user,
            sample_stack_user: what a sample's call stack holds (the
            kernel's walk, or the registers and stack bytes to unwind).
        sigtrap, sig_data: synchronous SIGTRAP in the thread that hit.
        remove_on_exec: the kernel removes the event from a task that execs
            (Linux 5.13+): a watch on a name of one program never watches
            that address in the next.
    """

    enabled: bool = True
    enable_on_exec: bool = False
    exclude_kernel: "bool | None" = None
    sample_period: int = 0
    sample_type: int = 0
    wakeup_events: int = 0
    watermark: int = 0
    sample_id_all: bool = False
    mmap: bool = False
    comm: bool = False
    task: bool = False
    sigtrap: bool = False
    sig_data: int = 0
    sample_max_stack: int = 0
    read_format: int = 0
    exclude_callchain_kernel: bool = False
    exclude_callchain_user: bool = False
    sample_regs_user: int = 0
    sample_stack_user: int = 0
    remove_on_exec: bool = False


DEFAULT_OPTIONS = EventOptions()


class SlotLedger:
    """The slots perfbp's own open events hold in this process, in the
    kernel's accounting.

    Every event perfbp opens is entered here and removed when closed, so that
    a refusal can be explained: either perfbp's own watches hold the slots
    (named), or — when the model says the breakpoint fits and the kernel
    still says ENOSPC — something outside perfbp does, named as far as /proc
    tells (:mod:`perfbp.kernel.holders`: a tracer such as gdb, another perf).
    Entries are cheap tuples, written by :func:`open_event_fd` and removed by
    :func:`close_event` (opening and closing are hot paths); the
    :class:`~perfbp.kernel.slots.SlotModel` is built from them only when a
    plan or an explanation asks (:meth:`snapshot`).
    """

    def __init__(self) -> None:
        self._by_fd: dict = {}

    @staticmethod
    def task_of(pid: int):
        if pid == 0:
            return _native_id()
        return None if pid < 0 else pid

    def snapshot(self):
        """A :class:`~perfbp.kernel.slots.SlotModel` holding every open event, and
        the owners' descriptions."""
        from .arch import current
        from .slots import SlotModel

        rules = current()
        model = SlotModel(rules.name, system.possible_cpus(),
                          data_slots=rules.data_slots, inst_slots=rules.inst_slots,
                          shared=rules.shared_slots)
        owners = set()
        for bp, task, cpu, pid, target in list(self._by_fd.values()):
            owner = f"perfbp's {bp.spec} on {_where(pid, cpu, target)}"
            owners.add(owner)
            model.admit(task, cpu, bp.bp_type, owner=owner)
        return model, sorted(owners)

    def explain_refusal(self, bp: Breakpoint, pid: int, cpu: int) -> str:
        """Why the kernel said ENOSPC, as far as perfbp can know."""
        from ..errors import PerfbpError

        model, _owners = self.snapshot()
        try:
            model.check(self.task_of(pid), cpu, bp.bp_type)
        except PerfbpError as exc:
            return f"{exc.message}. Close one of those watches, or watch fewer or shorter ranges"
        from . import holders

        try:
            found = holders.summary(holders.find(self.task_of(pid) or -1))
        except Exception:  # /proc read mid-change, or odd: the refusal still explains
            found = ("held outside perfbp (gdb watchpoints, another perf, a system-wide "
                     "watch, kgdb)")
        return (f"no slot is free, and perfbp's own watches are not what holds them: "
                f"they are {found}. End those, or watch fewer or shorter ranges")

    def __len__(self) -> int:
        return len(self._by_fd)


def _native_id() -> int:
    # gettid(2): Thread.native_id is not updated in a forked child (3.11)
    return threading.get_native_id()


LEDGER = SlotLedger()
_LEDGER_FDS = LEDGER._by_fd
_TASK_SIZE_MAX = _current_arch().task_size_max


def close_event(fd: int) -> None:
    """Close an event perfbp opened and free its slot in the ledger."""
    _LEDGER_FDS.pop(fd, None)
    try:
        abi.close(fd)
    except OSError:
        pass


def _build_template(inherit: bool, opts: EventOptions) -> bytes:
    """The attr bytes every breakpoint opened with these options shares: all
    but the breakpoint's own fields and ``exclude_kernel``."""
    attr = abi.new_attr()
    attr.type = PERF_TYPE_BREAKPOINT
    attr.exclude_hv = 1
    attr.disabled = 0 if opts.enabled and not opts.enable_on_exec else 1
    attr.enable_on_exec = opts.enable_on_exec
    attr.inherit = inherit
    if opts.sample_period:
        attr.sample_period = opts.sample_period
        attr.sample_type = opts.sample_type
        if opts.watermark:
            attr.watermark = 1
            attr.wakeup_watermark = opts.watermark
        else:
            attr.wakeup_events = opts.wakeup_events
        attr.sample_id_all = opts.sample_id_all
        attr.sample_max_stack = opts.sample_max_stack
        attr.sample_regs_user = opts.sample_regs_user
        attr.sample_stack_user = opts.sample_stack_user
    attr.mmap = opts.mmap
    attr.mmap2 = opts.mmap
    attr.comm = opts.comm
    attr.comm_exec = opts.comm
    attr.task = opts.task
    attr.read_format = opts.read_format
    attr.exclude_callchain_kernel = opts.exclude_callchain_kernel
    attr.exclude_callchain_user = opts.exclude_callchain_user
    if opts.remove_on_exec:
        attr.remove_on_exec = 1
    if opts.sigtrap:
        attr.sigtrap = 1
        attr.remove_on_exec = 1
        attr.sig_data = opts.sig_data
        if not opts.sample_period:
            attr.sample_period = 1
    return abi.attr_bytes(attr)


_TEMPLATES: "dict[tuple[bool, int], tuple[EventOptions, bytes]]" = {}


def _template(inherit: bool, opts: EventOptions) -> bytes:
    # keyed by identity: hashing a frozen dataclass of 20 fields costs more
    # than the rest of building an attr; the entry keeps opts alive, and the
    # identity check guards against a reused id
    entry = _TEMPLATES.get((inherit, id(opts)))
    if entry is None or entry[0] is not opts:
        if len(_TEMPLATES) > 256:
            _TEMPLATES.clear()
        entry = _TEMPLATES[(inherit, id(opts))] = (opts, _build_template(inherit, opts))
    return entry[1]


def _fill(attr, bp: Breakpoint, opts: EventOptions) -> None:
    """Set the fields of ``attr`` that belong to ``bp`` itself."""
    attr.bp_type = ACCESS_TYPES[bp[2]]
    attr.bp_addr = bp[0]
    attr.bp_len = bp[1]
    exclude_kernel = opts.exclude_kernel
    if exclude_kernel is None:  # user addresses: perf's :u
        exclude_kernel = bp[0] + bp[1] - 1 < _TASK_SIZE_MAX
    attr.exclude_kernel = 1 if exclude_kernel else 0


def make_attr(bp: Breakpoint, inherit: bool, opts: EventOptions):
    """The ``perf_event_attr`` for ``bp``: a new copy of the options'
    template with the breakpoint's own fields set."""
    attr = abi.attr_from_bytes(_template(inherit, opts))
    _fill(attr, bp, opts)
    return attr


_scratch = threading.local()


def _forget_after_fork() -> None:
    # a forked child's thread has another id: open_self must not enter its
    # events in the ledger under the parent's (its attr buffers are fine)
    _scratch.__dict__.pop("self_cache", None)


os.register_at_fork(after_in_child=_forget_after_fork)
_BP_FIELDS = struct.Struct("<IQQ")  # bp_type, bp_addr, bp_len: contiguous at offset 52
_BP_FIELDS_AT = abi.ffi.offsetof("struct perf_event_attr", "bp_type")
if (abi.ffi.offsetof("struct perf_event_attr", "bp_addr"),
        abi.ffi.offsetof("struct perf_event_attr", "bp_len")) != (_BP_FIELDS_AT + 4, _BP_FIELDS_AT + 12):
    raise ImportError("perf_event_attr: bp_type, bp_addr, bp_len are not contiguous")


def _scratch_attr(inherit: bool, opts: EventOptions, exclude_kernel: bool):
    """A per-thread attr buffer holding the options' template with
    exclude_kernel set: ``(attr, writable view)``."""
    cache = getattr(_scratch, "attrs", None)
    if cache is None:
        cache = _scratch.attrs = {}
    key = (inherit, id(opts), exclude_kernel)
    entry = cache.get(key)
    if entry is None or entry[0] is not opts:
        if len(cache) > 64:
            cache.clear()
        attr = abi.attr_from_bytes(_template(inherit, opts))
        attr.exclude_kernel = 1 if exclude_kernel else 0
        entry = cache[key] = (opts, attr, abi.attr_view(attr))
    return entry


class TrapGuard:
    """This process's guard against debug exceptions that arrive without
    their status.

    Some hypervisors now and then deliver a breakpoint's debug exception with
    DR6 empty: the kernel cannot tell which breakpoint fired, does not count
    the hit, and sends the thread a SIGTRAP (``si_code`` TRAP_BRKPT), whose
    default action kills the process.  Once perfbp watches its own process
    (a thread or process target that is this one, or CPUs, which include
    it), it handles SIGTRAP itself (only where SIGTRAP still has its default
    disposition): such a trap is counted in :attr:`taken` and the thread
    goes on; a hit callback's trap (TRAP_PERF) goes to :attr:`dispatch`;
    any other SIGTRAP does what the default would (the process ends).

    Attributes:
        taken: debug exceptions without status this process survived (hits
            the kernel did not count).
        dispatch: ``dispatch(code, addr, perf_data)`` for TRAP_PERF traps.
    """

    taken = 0
    dispatch = None
    _token = None

    @classmethod
    def ensure(cls) -> None:
        if cls._token is not None or abi.MACHINE != "x86_64":
            return
        import signal

        if signal.getsignal(signal.SIGTRAP) is not signal.SIG_DFL:
            return  # the program handles SIGTRAP itself
        cls._token = abi.install_sigtrap(cls._on_trap)

    @staticmethod
    def _on_trap(code: int, addr: int, data: int) -> None:
        # runs inside the SIGTRAP, in the thread that took it
        if code == abi.TRAP_PERF:
            if TrapGuard.dispatch is not None:
                TrapGuard.dispatch(code, addr, data)
            return
        if code == TRAP_BRKPT:
            TrapGuard.taken += 1
            return
        import os
        import signal

        abi.restore_sigtrap(TrapGuard._token)  # the default: the process ends
        TrapGuard._token = None
        os.kill(os.getpid(), signal.SIGTRAP)


TRAP_BRKPT = 1
_SELF = [0, -1]  # pids that are this process: 0, its pid (filled lazily), CPUs (-1)


def _watches_self(pid: int) -> bool:
    if _SELF[1] < 0:
        import os
        _SELF[1] = os.getpid()
    return pid <= 0 or pid == _SELF[1]


def open_event_fd(bp: Breakpoint, pid: int, cpu: int, inherit: bool,
                  opts: EventOptions = DEFAULT_OPTIONS, target: "Target | None" = None) -> int:
    """Open one breakpoint event; return its file descriptor.

    The attr is built in a per-thread scratch copy of the options' template
    (no allocation on this hot path, and the breakpoint's three contiguous
    fields written in one pack); :func:`make_attr` rebuilds the same bytes
    when MODIFY_ATTRIBUTES needs them.

    Raises:
        PerfbpError: the subclass that matches the kernel's errno, with a
            message naming the breakpoint, the target and the fix.
    """
    exclude_kernel = opts.exclude_kernel
    if exclude_kernel is None:  # user addresses: perf's :u
        exclude_kernel = bp[0] + bp[1] - 1 < _TASK_SIZE_MAX
    cache = getattr(_scratch, "attrs", None)
    entry = cache.get((inherit, id(opts), exclude_kernel)) if cache is not None else None
    if entry is None or entry[0] is not opts:
        entry = _scratch_attr(inherit, opts, exclude_kernel)
    _opts, attr, view = entry
    _BP_FIELDS.pack_into(view, _BP_FIELDS_AT, ACCESS_TYPES[bp[2]], bp[0], bp[1])
    if TrapGuard._token is None and _watches_self(pid):
        TrapGuard.ensure()
    try:
        fd = abi.perf_event_open(attr, pid, cpu)
    except OSError as exc:
        raise error_from_oserror(exc, bp=bp, pid=pid, cpu=cpu, target=target,
                                 kernel_mode=not exclude_kernel) from None
    # pid 0 is the calling thread: the ledger needs its id (gettid(2); the
    # hot path, open_self, keeps it per thread)
    _LEDGER_FDS[fd] = (bp, _native_id() if pid == 0 else (None if pid < 0 else pid),
                       cpu, pid, target)
    return fd


def open_self(bp: Breakpoint, opts: EventOptions) -> int:
    """:func:`open_event_fd` for the calling thread (pid 0, any CPU, no
    inherit): the hot path of ``Counter(bp)``.  Each thread keeps, per
    options, its attr buffers for user and kernel addresses and its own id.

    Raises:
        PerfbpError: as :func:`open_event_fd`.
    """
    try:
        entry = _scratch.self_cache[id(opts)]
    except (AttributeError, KeyError):
        entry = _self_entry(opts)
    else:
        if entry[0] is not opts:
            entry = _self_entry(opts)
    exclude_kernel = opts.exclude_kernel
    if exclude_kernel is None:  # user addresses: perf's :u
        exclude_kernel = bp[0] + bp[1] - 1 < _TASK_SIZE_MAX
    view = entry[2] if exclude_kernel else entry[4]
    _BP_FIELDS.pack_into(view, _BP_FIELDS_AT, ACCESS_TYPES[bp[2]], bp[0], bp[1])
    if TrapGuard._token is None:
        TrapGuard.ensure()
    try:
        fd = abi.perf_event_open(entry[1] if exclude_kernel else entry[3], 0, -1)
    except OSError as exc:
        raise error_from_oserror(exc, bp=bp, pid=0, cpu=-1,
                                 kernel_mode=not exclude_kernel) from None
    _LEDGER_FDS[fd] = (bp, entry[5], -1, 0, None)
    return fd


def _self_entry(opts: EventOptions) -> tuple:
    """``(opts, attr, view, attr, view, thread id)``: this thread's attrs
    for ``opts`` excluding kernel mode, then not."""
    cache = getattr(_scratch, "self_cache", None)
    if cache is None:
        cache = _scratch.self_cache = {}
    if len(cache) > 64:
        cache.clear()
    parts: list = [opts]
    for exclude_kernel in (True, False):
        attr = abi.attr_from_bytes(_template(False, opts))
        attr.exclude_kernel = 1 if exclude_kernel else 0
        parts += [attr, abi.attr_view(attr)]
    entry = cache[id(opts)] = (*parts, _native_id())
    return entry


def tracking_attr(inherit: bool, opts: EventOptions):
    """The attr of a tracking event: a software ``dummy`` event (it counts
    nothing and holds no debug register) that asks for the side-band records
    (COMM, MMAP2, FORK, EXIT) with the same sample layout as the breakpoints
    it shares a ring with, as perf's ``dummy:u`` does.

    Why not ask the breakpoint events themselves: the kernel counts every
    record an event fails to write in that event's ``lost_samples``, side-band
    records included, so a breakpoint that tracked would report more samples
    lost than hits it missed when the ring fills."""
    from dataclasses import replace

    attr = abi.attr_from_bytes(_template(inherit, replace(
        opts, mmap=True, comm=True, task=True, remove_on_exec=False, sigtrap=False)))
    # samples with user stacks (a dwarf call graph): the mappings without
    # code too, as perf records them, for the unwinders that read an
    # object's CFI through the process's memory (perf's libunwind finds a
    # PIE's .eh_frame_hdr in its read-only segment by address)
    attr.mmap_data = 1 if opts.sample_type & PERF_SAMPLE_STACK_USER else 0
    attr.type = PERF_TYPE_SOFTWARE
    attr.config = PERF_COUNT_SW_DUMMY
    attr.exclude_kernel = 1  # side-band records do not depend on it; paranoid 2 needs it
    return attr


def output_attr(opts: EventOptions):
    """The attr of a values output event: a software ``bpf-output`` event
    (it holds no debug register) of one CPU, into which a watch's program
    writes the samples of the hits that match (``bpf_perf_event_output``),
    with the breakpoints' sample layout (theirs, with PERF_SAMPLE_RAW, which
    holds the values): see :mod:`perfbp.kernel.values`."""
    from dataclasses import replace

    attr = abi.attr_from_bytes(_template(False, replace(
        opts, enable_on_exec=False, remove_on_exec=False, sigtrap=False)))
    attr.type = PERF_TYPE_SOFTWARE
    attr.config = PERF_COUNT_SW_BPF_OUTPUT
    attr.exclude_kernel = 0  # the program writes from the debug exception, in the kernel
    return attr


def open_output_fd(cpu: int, opts: EventOptions, target: "Target | None" = None) -> int:
    """Open the output event of :func:`output_attr` on ``cpu`` (every task).

    Raises:
        PerfbpError: as :func:`open_event_fd`.
    """
    try:
        return abi.perf_event_open(output_attr(opts), -1, cpu)
    except OSError as exc:
        raise error_from_oserror(exc, pid=-1, cpu=cpu, target=target,
                                 what="values output event (the samples a condition "
                                      "lets through)") from None


def open_tracking_fd(pid: int, cpu: int, inherit: bool, opts: EventOptions,
                     target: "Target | None" = None) -> int:
    """Open the tracking event of :func:`tracking_attr` on ``pid``/``cpu``.

    Raises:
        PerfbpError: as :func:`open_event_fd`.
    """
    try:
        return abi.perf_event_open(tracking_attr(inherit, opts), pid, cpu)
    except OSError as exc:
        raise error_from_oserror(exc, pid=pid, cpu=cpu, target=target,
                                 what="tracking event (thread names, mappings)") from None


def _where(pid: int, cpu: int, target: "Target | None") -> str:
    if target is not None:
        return target.describe()
    if pid == -1:
        return f"CPU {cpu}"
    who = "this thread" if pid == 0 else f"thread {pid}"
    return who + (f" on CPU {cpu}" if cpu >= 0 else "")


def error_from_oserror(exc: OSError, *, bp: "Breakpoint | None" = None, pid: int = 0,
                       cpu: int = -1, target: "Target | None" = None,
                       action: str = "open", what: str = "breakpoint",
                       kernel_mode: bool = False) -> PerfbpError:
    """Turn an OSError from a perf call into perfbp's exception for it.

    The one place where errno becomes meaning: the message says what was
    asked, why the kernel refused, and what to do.
    """
    if isinstance(exc, PerfbpError):
        return exc
    code = exc.errno or E.EIO
    what = bp.describe() if bp is not None else what
    where = _where(pid, cpu, target)
    asked = f"cannot {action} the {what} on {where}"
    ctx = dict(pid=pid, cpu=cpu, address=bp.address if bp else None)
    if code == E.ENOSPC:
        from .arch import current
        rules = current()
        why = LEDGER.explain_refusal(bp, pid, cpu) if bp is not None else \
            "no debug-register slot is free"
        return NoBreakpointSlots(
            f"{asked} (ENOSPC): {why}. {rules.name} has {rules.data_slots} slots per "
            f"thread and per CPU, shared by data and execute breakpoints.",
            errno=code, **ctx)
    if code in (E.EACCES, E.EPERM):
        return PermissionDenied(f"{asked}: {permission_advice(bp, pid, code, kernel_mode)}",
                                errno=code, **ctx)
    if code == E.ESRCH:
        who = f"process or thread {pid}" if pid > 0 else where
        return NoSuchProcess.phrased(f"{asked}: {who} does not exist (or has exited). "
                                     f"Check the id with ps, or start the program with "
                                     f"{{command}}.", errno=code, **ctx)
    if code == E.EINVAL:
        online = system.online_cpus()
        if cpu >= 0 and cpu not in online:
            reason = (f"CPU {cpu} does not exist or is offline (online CPUs: "
                      f"{','.join(map(str, online))}); choose one of those")
        elif bp is not None and bp.is_kernel() and bp.access == "x" \
                and system.kernel_config("CONFIG_KPROBES") == "n":
            reason = ("this kernel was built without CONFIG_KPROBES, and x86 then "
                      "refuses every execute breakpoint in kernel code "
                      "(arch_build_bp_info allows them only where kprobes may go); "
                      "watch kernel data instead, or use a kernel with kprobes")
        elif bp is not None and bp.is_kernel():
            reason = ("the kernel refused the kernel-space address; kernel "
                      "breakpoints must not exclude kernel mode and must not be "
                      "task-bound on every architecture: try a CPU target (-a)")
        else:
            reason = ("the kernel found the request invalid (EINVAL); check the "
                      "address, length and access against `perfbp check`")
        return InvalidBreakpoint(f"{asked}: {reason}", errno=code, **ctx)
    if code in (E.ENOENT, E.ENODEV, E.EOPNOTSUPP, E.ENOSYS):
        return Unsupported(
            f"{asked}: this kernel or machine has no usable hardware-breakpoint "
            f"PMU ({os_strerror(code)}); `perfbp check` explains what is missing",
            errno=code, **ctx)
    if code == E.E2BIG:
        return Unsupported(
            f"{asked}: this kernel is older than the perf_event_attr layout perfbp "
            f"uses ({abi.ATTR_SIZE} bytes, Linux 6.3+) (E2BIG); upgrade the kernel",
            errno=code, **ctx)
    if code == E.EMFILE or code == E.ENFILE:
        return PerfbpError(f"{asked}: too many open files ({os_strerror(code)}); "
                           f"raise the limit with `ulimit -n`", errno=code, **ctx)
    return PerfbpError(f"{asked}: {os_strerror(code)}", errno=code, **ctx)


def os_strerror(code: int) -> str:
    import os
    return f"{E.errorcode.get(code, code)}: {os.strerror(code)}"


def permission_advice(bp: "Breakpoint | None", pid: int, code: int,
                      kernel_mode: bool = False) -> str:
    """Why the kernel said EACCES/EPERM here, and what would allow it.

    The checks are the kernel's, in its order (perf_event_open): kernel
    breakpoints need CAP_SYS_ADMIN; counting in kernel mode (``exclude_kernel``
    off, perfbp's ``:k``) needs perf_event_paranoid <= 1 or CAP_PERFMON; a
    whole CPU needs perf_event_paranoid <= 0; another task needs ptrace-read
    access to it (same user and dumpable, or CAP_SYS_PTRACE)."""
    paranoid = system.perf_event_paranoid()
    p = "unknown" if paranoid is None else str(paranoid)
    if bp is not None and bp.is_kernel():
        return (f"watching a kernel address needs CAP_SYS_ADMIN (the kernel "
                f"refuses kernel breakpoints to anyone else), and counting in "
                f"kernel mode needs perf_event_paranoid <= 1 or CAP_PERFMON "
                f"(perf_event_paranoid is {p} here). Run as root.")
    if kernel_mode and (paranoid is None or paranoid > 1):
        return (f"counting hits taken in kernel mode (:k) needs perf_event_paranoid "
                f"<= 1 or CAP_PERFMON, and perf_event_paranoid is {p} here. Drop :k "
                f"(user-mode hits only, perf's :u), run as root, or `sysctl "
                f"kernel.perf_event_paranoid=1`.")
    if pid == -1:
        return (f"perf_event_paranoid is {p}, and watching a whole CPU needs "
                f"perf_event_paranoid <= 0 or CAP_PERFMON (or CAP_SYS_ADMIN). Run "
                f"as root, grant CAP_PERFMON, or `sysctl kernel.perf_event_paranoid=0`.")
    if pid > 0:
        return f"{system.why_not_yours(pid)}. Run as that user or as root."
    return (f"perf_event_paranoid is {p}: above 2 no unprivileged perf events "
            f"are allowed. Lower it with `sysctl kernel.perf_event_paranoid=2`, "
            f"or grant CAP_PERFMON.")
