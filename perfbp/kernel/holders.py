"""Who holds the debug-register slots besides perfbp: what /proc can tell.

The kernel accounts every hardware breakpoint against the slots of its
thread and CPU (``kernel/events/hw_breakpoint.c``), whoever made it: the
perf events of perf, perfbp or any other program (a file descriptor each),
and the breakpoints a debugger sets through ptrace (gdb's hardware
watchpoints become perf events of the traced thread, with no descriptor).
When the kernel refuses a watch for lack of slots and perfbp's own events
are not the cause, these are the candidates:

* the **tracer** of the target's threads (``TracerPid`` in their status);
  for a CPU target, every tracer on the machine: a thread's breakpoints
  count against every CPU-wide one on the CPUs it may run on;
* the processes that hold **perf events** (``anon_inode:[perf_event]``
  descriptors in ``/proc/PID/fd``).  What ``/proc/PID/fdinfo/FD`` shows of
  a perf event is ``pos``, ``flags``, ``mnt_id`` and ``ino`` (Linux 6.18):
  not the attr (``type``, ``bp_addr``, ``bp_type``), nor the task or CPU it
  is on.  What can be known is the holder's command line: perf's names its
  events (``-e mem:ADDR/LEN:ACCESS`` is a breakpoint) and its target (``-p``,
  ``-t``, ``-a``, ``-C``, or a command it launched, an ancestor of the
  target then); perfbp's names its watches (``-w``) and target the same
  way.  A perf whose events are no breakpoints, or whose target is another
  process, is left out; a program whose command line says nothing is
  listed apart, as one that may hold them.

Everything here reads /proc: nothing is opened, nobody is disturbed.  A
user other than root sees only its own processes' descriptors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import system

PERF_EVENT_LINK = "anon_inode:[perf_event]"
#: holders listed in a message, of those known to hold slots and of those
#: that may (the rest are counted)
SHOWN_SURE, SHOWN_MAYBE = 8, 3


@dataclass(frozen=True)
class Holder:
    """A process that holds debug-register slots, or may.

    Attributes:
        pid: the process.
        name: its command name (``perf``, ``gdb``; ``perfbp`` for ``python
            -m perfbp``).
        traces: threads of the target it traces (a debugger).
        events: the perf event descriptors it holds (of every kind).
        breakpoints: the breakpoints its command line names (perf's
            ``mem:`` events, perfbp's watches).
        on: where its command line puts them (``process 1234``, ``every
            CPU``, ``CPUs 0,1``, ``the command it runs``), or empty.
        known: its tracing or its command line says it holds breakpoints
            where the refused watch would go; False: it holds perf events of
            a kind and target /proc does not show.
    """

    pid: int
    name: str
    traces: "tuple[int, ...]" = ()
    events: int = 0
    breakpoints: "tuple[str, ...]" = ()
    on: str = ""
    known: bool = True

    def describe(self) -> str:
        """``gdb (pid 5678, tracing process 1234)``, ``perf (pid 99, 2 perf
        events: mem:0x4040a0/8:w on process 1234)``."""
        parts = [f"pid {self.pid}"]
        if self.traces:
            parts.append("tracing " + _tasks_text(self.traces))
        if self.events:
            parts.append(f"{self.events} perf event{'s' if self.events != 1 else ''}"
                         + ("" if self.known else " of a kind /proc does not show"))
        named = ""
        if self.breakpoints:
            more = len(self.breakpoints) - 1
            named = ": " + self.breakpoints[0] + (f" and {more} more" if more else "")
            named += f" on {self.on}" if self.on else ""
        return f"{self.name} ({', '.join(parts)}{named})"

    def as_dict(self) -> dict:
        return {"pid": self.pid, "name": self.name, "traces": list(self.traces),
                "perf_events": self.events, "breakpoints": list(self.breakpoints),
                "on": self.on, "known": self.known}


def find(pid: int) -> "list[Holder]":
    """The processes that hold, or may hold, the slots a breakpoint on
    ``pid`` would need (a thread or process id; -1: a CPU), those known to
    hold them first.  This process is left out, with every thread of it:
    perfbp accounts for its own events (and its own tracer thread traces
    the command it launched)."""
    me = os.getpid()
    mine = set(_threads(me))
    if pid > 0:
        tgid = system.thread_group(pid) or pid
        watched = set(_threads(tgid) or [pid])
        family = _ancestors(tgid)
        watched.add(tgid)
    else:
        watched, family = None, set()
    tracers: "dict[int, list[int]]" = {}
    for tid in (watched if watched is not None else _every_thread()):
        tracer = system.status_field(tid, "TracerPid")
        if tracer and tracer not in mine:
            tracers.setdefault(system.thread_group(tracer) or tracer, []).append(tid)
    found = []
    for p in _processes():
        if p == me:
            continue
        events = _perf_events(p)
        traced = tuple(sorted(tracers.pop(p, ())))
        if not events and not traced:
            continue
        claim = _claims(p, watched, family) if events else Claim(system.comm(p))
        if claim is None:
            continue  # its command line says: no breakpoint where this one goes
        found.append(Holder(p, claim.name, traced, events, claim.breakpoints, claim.on,
                            claim.known or bool(traced)))
    found += [Holder(p, system.comm(p), tuple(sorted(t))) for p, t in tracers.items()]
    return sorted(found, key=lambda h: (not h.known, h.pid))


def summary(holders: "list[Holder]") -> str:
    """The holders in one phrase: ``held by gdb (pid 5678, ...) and perf
    (pid 99, ...)``; those that only may hold slots after them, or, when
    none is known, with what /proc cannot show."""
    sure = [h.describe() for h in holders if h.known]
    maybe = [h.describe() for h in holders if not h.known]
    if sure:
        return (f"held by {_and(sure, SHOWN_SURE)}"
                + (f"; perhaps also by {_and(maybe)}" if maybe else ""))
    return ("held outside perfbp, by nothing /proc names for sure: perhaps a debugger "
            "that has detached (the kernel keeps the breakpoints a tracer set, "
            "disabled, until the thread execs or exits), a kernel user such as kgdb, "
            + (f"or {_and(maybe)}" if maybe else
               "or another user's processes (only root sees their descriptors)"))


def _and(items: "list[str]", shown: int = SHOWN_MAYBE) -> str:
    if len(items) > shown:
        items = items[:shown] + [f"{len(items) - shown} more"]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _tasks_text(tids: "tuple[int, ...]") -> str:
    leader = [t for t in tids if system.thread_group(t) == t]
    if leader:  # a debugger attaches to every thread of a process
        return f"process {leader[0]}"
    return ("thread " if len(tids) == 1 else "threads ") + ",".join(map(str, tids))


# -- /proc -----------------------------------------------------------------------------

def _processes() -> "list[int]":
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def _threads(pid: int) -> "list[int]":
    try:
        return system.thread_ids(pid)
    except (ProcessLookupError, OSError):
        return []


def _every_thread() -> "list[int]":
    return [t for p in _processes() for t in _threads(p)]


def _ancestors(pid: int) -> "set[int]":
    """The processes that started ``pid`` (its parent, theirs ...)."""
    out: "set[int]" = set()
    while pid > 1 and pid not in out:
        out.add(pid)
        pid = system.status_field(pid, "PPid") or 0
    return out


def _perf_events(pid: int) -> int:
    """How many perf event descriptors process ``pid`` holds (0 when its
    descriptors cannot be read: another user's, or gone)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    n = 0
    for fd in fds:
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == PERF_EVENT_LINK
        except OSError:
            pass
    return n


def _cmdline(pid: int) -> "list[str]":
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


# -- what a command line says ----------------------------------------------------------

#: per tool: the options that name breakpoints, and those that take a value
_EVENTS = {"perf": ("-e", "--event"), "perfbp": ("-w", "--watch")}
_VALUED = {"-e", "--event", "-w", "--watch", "-p", "--pid", "-t", "--tid", "-C", "--cpu",
           "-o", "--output", "-i", "--input", "-c", "--count", "--period", "-F", "--freq",
           "-I", "--interval", "-d", "--duration", "-m", "--mmap-pages", "-r", "--repeat",
           "-G", "--cgroup", "-x", "--field-separator", "--ring-pages", "--slice-ms",
           "--top", "-D", "--delay", "--call-graph", "--sort", "-s", "--format", "-f"}


def _tool(argv: "list[str]") -> "tuple[str, list[str]] | None":
    """``(tool, its arguments)`` for a perf or perfbp command line (perfbp
    also as ``python -m perfbp``), or None."""
    for i, arg in enumerate(argv[:4]):
        name = os.path.basename(arg)
        if name in _EVENTS and (i == 0 or argv[i - 1] == "-m"):
            return name, argv[i + 1:]
    return None


def _options(args: "list[str]") -> "tuple[dict[str, list[str]], bool]":
    """The options of a perf or perfbp command line (short and long, with
    their values attached or apart), and whether it launches a command."""
    opts: "dict[str, list[str]]" = {}
    i, positional = 0, False
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            return opts, i < len(args)
        if not arg.startswith("-") or arg == "-":
            if positional:  # perf record ARGS: after the subcommand, a workload
                return opts, True
            positional = True  # the subcommand (record, stat ...)
            continue
        name, eq, value = arg.partition("=")
        if not eq and not arg.startswith("--") and len(arg) > 2:
            name, value, eq = arg[:2], arg[2:], "="  # -emem:0x1, -p1234
        if name in _VALUED and not eq:
            value = args[i] if i < len(args) else ""
            i += 1
        opts.setdefault(name, []).append(value)
    return opts, False


@dataclass(frozen=True)
class Claim:
    """What a command line says of its perf events (see :func:`_claims`)."""

    name: str
    breakpoints: "tuple[str, ...]" = ()
    on: str = ""
    known: bool = True


def _claims(pid: int, watched: "set[int] | None", family: "set[int]") -> "Claim | None":
    """:func:`claim` of process ``pid``'s command line; one that says
    nothing (not perf or perfbp) gives an unknown claim."""
    argv = _cmdline(pid)
    if _tool(argv) is None:
        return Claim(system.comm(pid), known=False)
    return claim(argv, pid, watched, family)


def claim(argv: "list[str]", pid: int, watched: "set[int] | None",
          family: "set[int]") -> "Claim | None":
    """What a perf or perfbp command line (``argv``, of process ``pid``)
    says of its perf events: the breakpoints it names and where they go.

    Args:
        watched: the tasks of the target a watch was refused on (None: a
            CPU, where every breakpoint counts).
        family: the target's ancestors (a command perf launched is one of
            its descendants).

    Returns:
        The claim; None when it says its events are no breakpoints, or are
        on another target, or when ``argv`` is not perf's or perfbp's.
    """
    tool = _tool(argv)
    if tool is None:
        return None
    name, args = tool
    opts, launches = _options(args)
    events = [e for o in _EVENTS[name] for v in opts.get(o, ()) for e in _split_events(v)]
    if name == "perf":
        events = [e for e in events if e.startswith("mem:") or e.startswith("breakpoint")]
    if not events:
        return None
    cpus = [v for o in ("-C", "--cpu") for v in opts.get(o, ())]
    on_cpus = bool(cpus) or any(o in opts for o in ("-a", "--all-cpus"))
    # another process's command line: only ASCII digits are ids ("²".isdigit())
    tasks = {kind: sorted({int(p) for o in opts_of for v in opts.get(o, ())
                           for p in v.split(",") if p.strip().isascii()
                           and p.strip().isdigit()})
             for kind, opts_of in (("process", ("-p", "--pid")), ("thread", ("-t", "--tid")))}
    pids = {*tasks["process"], *tasks["thread"]}
    if watched is not None and not on_cpus:
        if pids and not pids & watched:
            return None
        if not pids and launches and pid not in family:
            return None
    if on_cpus:
        on = ("CPU " if cpus[-1].isdigit() else "CPUs ") + cpus[-1] if cpus else "every CPU"
    else:
        on = " and ".join(f"{kind} {','.join(map(str, ids))}"
                          for kind, ids in tasks.items() if ids)
        on = on or ("the command it runs" if launches else "")
    return Claim(name, tuple(events), on)


def _split_events(value: str) -> "list[str]":
    """perf's ``-e a,b``: the events, with commas inside ``/.../`` kept."""
    out, depth, cur = [], 0, ""
    for ch in value:
        if ch == "/" and "mem:" not in cur:
            depth ^= 1
        if ch == "," and not depth:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return [e for e in out + [cur] if e]
