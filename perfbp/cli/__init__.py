"""The ``perfbp`` command line: a thin shell over the public API.

Every command parses options, calls :mod:`perfbp`, and renders.  Bad input
gets one line on stderr naming the problem and the fix, and exit code 2; no
traceback.  Nothing here runs through a shell.
"""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Annotated, List, Optional

import typer

import perfbp
from perfbp import _plumbing as plumbing

from .coerce import Command as PlainCommand, Group as PlainGroup

app = typer.Typer(
    name="perfbp",
    cls=PlainGroup,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Hardware watchpoints for everyone: count every access to memory "
         "in a program, a process, or system-wide, with the CPU's debug "
         "registers (perf_event breakpoints).",
    epilog="\b\nExamples:\n"
           "  perfbp check                               # can watchpoints work here?\n"
           "  perfbp stat -w 0x404040 -- ./prog          # count writes to 8 bytes\n"
           "  perfbp stat -w mem:0x404040/4:rw -p 1234   # reads+writes in a process\n"
           "  perfbp record -w 0x404040 -- ./prog        # sample every write\n"
           "  perfbp report                              # who wrote it\n",
)

BAD_INPUT = 2

# -- the options several commands share, defined once ---------------------------------
Watches = Annotated[Optional[List[str]], typer.Option(
    "-w", "--watch", metavar="SPEC",
    help="What to watch: [mem:]ADDR|SYMBOL[@OBJECT][+OFF][/LEN][:ACCESS][:u|k] (each part "
         "under 'Watch SPEC' below). Repeat for more.")]
#: The whole -w grammar, at the end of the help of every command that takes -w.
SPEC_HELP = (
    "\b\nWatch SPEC: [mem:]ADDR|SYMBOL[@OBJECT][+OFF][/LEN][:ACCESS][:u|k]\n"
    "  ADDR       an address, hex or decimal         0x4040a0\n"
    "  SYMBOL     a global, found as ld.so finds it  counter\n"
    "    .MEMBER  a struct member (from DWARF)       config.flags\n"
    "    [N]      an array element                   table[3], grid[1][2].next\n"
    "  @OBJECT    in that library or program         environ@libc.so.6\n"
    "             (file name, soname or path), or    vfs_read@kernel:x\n"
    "             the kernel\n"
    "  +OFF       bytes past the start               counter+4\n"
    "  /LEN       bytes; default: the symbol's size  buf/64\n"
    "             or 8. Any length: split over\n"
    "             several debug registers\n"
    "  :ACCESS    w write (default), rw read or      counter:rw\n"
    "             write, x execute (r: not on x86)\n"
    "  :u / :k    user-mode hits only (default for   0x4040a0:w:k\n"
    "             user addresses) / kernel's too\n"
    "  mem:       perf's spelling: one register      mem:0x4040a0/8:w\n"
    "  Quote a SPEC with [ ] for the shell:  -w 'table[3].next@libfoo.so:rw'\n\n")
Pid = Annotated[Optional[int], typer.Option("-p", "--pid", help="Every thread of this process.")]
Tid = Annotated[Optional[int], typer.Option("-t", "--tid", help="This thread only.")]
AllCpus = Annotated[bool, typer.Option("-a", "--all-cpus", help="Every CPU (system-wide).")]
Cpus = Annotated[Optional[str], typer.Option("-C", "--cpu", metavar="CPUS",
                                             help="These CPUs (0,1 or 0-3).")]
Duration = Annotated[Optional[float], typer.Option("-d", "--duration", metavar="SECONDS",
                                                   help="Stop after this many seconds.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
NoPtrace = Annotated[bool, typer.Option(
    "--no-ptrace", help="Do not follow the command with ptrace (for one that uses ptrace "
                        "itself: strace, gdb); addresses only.")]
Multiplex = Annotated[bool, typer.Option(
    "--multiplex", help="More watches than slots: let them take turns and report scaled "
                        "estimates (with their coverage).")]
SliceMs = Annotated[int, typer.Option("--slice-ms", metavar="MS",
                                      help="With --multiplex: how long each turn lasts.")]
Top = Annotated[int, typer.Option("--top", min=1, help="Writers and threads listed per watch.")]
If = Annotated[Optional[List[str]], typer.Option(
    "--if", metavar="EXPR",
    help="Only the hits for which EXPR holds, tested in the kernel on every hit: EXPR over "
         "new (the watched value after the access) and old (the value after the hit "
         "before), numbers, == != < <= > >=, & (mask), and, or, not, ( ). Once for every "
         "watch, or once per watch in order. Example: --if 'old != 0 and new == 0'.")]
Command = Annotated[Optional[List[str]], typer.Argument(
    metavar="[-- CMD ARGS...]",
    help="A program to run with the watches armed before its first instruction.")]


def error(message: str) -> None:
    """Print one error line: characters that are not printable (a newline or
    an escape sequence in a path or value the message names) are escaped as
    Python escapes them, so that it stays one line and cannot move the
    terminal's cursor."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    typer.echo(f"perfbp: error: {text}", err=True)


def fail(message: str, code: int = BAD_INPUT) -> "typer.Exit":
    """Print one error line and leave with ``code``."""
    error(message)
    return typer.Exit(code)


def shown(text: str, limit: int = 40) -> str:
    """User text as a message quotes it: repr-style (control characters
    escaped, so an error stays one line) and cut to ``limit`` characters."""
    if len(text) > limit:
        return repr(text[:limit])[:-1] + f"...' ({len(text):,} characters)"
    return repr(text)


def _parse_cpus(text: str) -> "list[int]":
    online = plumbing.online_cpus()
    try:
        cpus = plumbing.parse_cpu_list(text)
    except ValueError:
        raise fail(f"-C {shown(text)} is not a CPU list of this machine: write it like 0 "
                   f"or 0,1 or 0-3 (online CPUs: {','.join(map(str, online))})")
    bad = [c for c in cpus if c not in online]
    if bad or not cpus:
        listed = ",".join(map(str, bad[:8])) + (",..." if len(bad) > 8 else "")
        raise fail(f"-C {shown(text)}: CPU {listed or shown(text)} is not online "
                   f"(online CPUs: {','.join(map(str, online))})")
    return cpus


MAX_RING_PAGES = 1 << 18  # the kernel allocates the ring's page table with kmalloc
MAX_PERIOD = (1 << 63) - 1


def _seconds(option: str, value: "float | None") -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise fail(f"{option} {value} must be a positive number of seconds")


def resolve_target(pid: Optional[int], tid: Optional[int], all_cpus: bool,
                   cpu: Optional[str], command: "list[str]") -> "perfbp.Target | None":
    """The one target the options name (CPUs with ``command``: those CPUs
    while it runs); None means: launch ``command``."""
    given = [name for name, on in (("-p", pid is not None), ("-t", tid is not None),
                                   ("-a", all_cpus), ("-C", cpu is not None),
                                   ("-- CMD", bool(command))) if on]
    if all_cpus and cpu is not None:
        given.remove("-a")  # -a -C 0 means CPU 0, as in perf
    if (all_cpus or cpu is not None) and command:
        given.remove("-- CMD")  # -a -- CMD: every CPU while the command runs, as in perf
    if len(given) != 1:
        what = "no target" if not given else "more than one target (" + ", ".join(given) + ")"
        raise fail(f"{what}: give one of -p PID (a process), -t TID (a thread), "
                   f"-a (all CPUs), -C CPUS, or -- CMD ARGS (a program to run; with -a "
                   f"or -C: those CPUs while it runs)")
    if pid is not None:
        if pid <= 0:
            raise fail(f"-p {pid} is not a process id: give a positive pid (see ps)")
        if not plumbing.process_exists(pid):
            raise fail(f"process {pid} does not exist: check the pid with ps, or run "
                       f"the program under perfbp with -- CMD")
        return perfbp.Target.process(pid)
    if tid is not None:
        if tid <= 0 or not plumbing.process_exists(tid):
            raise fail(f"thread {tid} does not exist: list a process's threads with "
                       f"ls /proc/PID/task")
        return perfbp.Target.thread(tid)
    if cpu is not None:
        return perfbp.Target.cpus(_parse_cpus(cpu))
    if all_cpus:
        return perfbp.Target.cpus()
    return None


def _watches(specs: "list[str]") -> "list":
    """Watches for the -w options: resolved now when they give addresses, or
    parsed specs when they name symbols (resolved in the target)."""
    if not specs:
        raise fail("no watch given: add -w SPEC, for example -w mem:0x404040/8:w")
    parsed = [plumbing.parse_watch(text) for text in specs]
    if any(p.symbol is not None for p in parsed):
        return parsed
    return [perfbp.Watch.from_spec(p) for p in parsed]


@dataclass
class RunArgs:
    """A session's options, checked: what every command that runs watches
    passes to the API."""

    watches: list
    target: "perfbp.Target | None"
    command: "list[str] | None"
    duration: "float | None"
    multiplex: "float | None"
    trace: bool


def run_args(watch, pid, tid, all_cpus: bool, cpu, command, *, duration=None,
             multiplex: bool = False, slice_ms: int = 10, no_ptrace: bool = False) -> RunArgs:
    """Check the options every session command shares; one line and exit 2
    for the first that is wrong.  The slots are planned once, by the API."""
    command = list(command or [])
    target = resolve_target(pid, tid, all_cpus, cpu, command)
    watches = _watches(list(watch or []))
    _seconds("--duration", duration)
    if slice_ms < 1:
        raise fail(f"--slice-ms {slice_ms} must be at least 1 millisecond")
    return RunArgs(watches, target, command or None, duration,
                   slice_ms / 1000 if multiplex else None, not no_ptrace)


def result_watches(watches) -> list:
    """Watches as the banner shows them (specs by their text)."""
    return [w if isinstance(w, perfbp.Watch) else _SpecView(w) for w in watches]


class _SpecView:
    def __init__(self, spec) -> None:
        self.spec = spec.text


def _banner(watches, description: str, plan: "perfbp.Plan",
            target: "perfbp.Target | None", debug_note: "RunArgs | None" = None) -> None:
    """The start line: the watches as given, and the slots the run's plan
    (names resolved, ranges split) takes in each thread, or on each CPU for
    a CPU target; then, given ``debug_note``, :func:`_debug_note`'s hint."""
    n = len(watches)
    slots = plan.slots_needed
    per = "per CPU" if target is not None and target.kind == "cpus" else "per thread"
    how = (f"{slots} debug-register slot{'s' if slots != 1 else ''} {per}"
           if plan.fits else "taking turns on the free slots (--multiplex)")
    typer.echo(f"perfbp: watching {n} location{'s' if n > 1 else ''} "
               f"({', '.join(w.spec for w in watches)}) in {description}; "
               f"{how}. Ctrl-C to end.", err=True)
    _warnings(plan.watches)
    if debug_note is not None:
        _debug_note(debug_note)


def _warnings(watches) -> None:
    """One line on stderr for each watch that can never fire (read-only
    memory)."""
    for w in watches:
        if w.warning:
            typer.echo(f"perfbp: WARNING: {w.warning}", err=True)


def _debug_note(args: RunArgs) -> None:
    """The start's hint for ``record`` and ``top``, whose reports name the
    program's functions and lines: when the program (the command, or what
    a wrapper's command line names by path; the process of -p/-t) is
    stripped and no debug file of it was found."""
    if args.command:
        command = list(args.command)
        programs = plumbing.reported_programs(command, plumbing.resolve_command(command))
    elif args.target is not None and args.target.kind != "cpus" and args.target.pid > 0:
        programs = [f"/proc/{args.target.pid}/exe"]
    else:
        return
    for program in programs:
        why = plumbing.missing_debug(program)
        if why is not None:
            typer.echo(f"perfbp: note: {why}: the report will show its code as addresses; "
                       f"{plumbing.INSTALL_DEBUG}", err=True)


class _Output:
    """``-o FILE``: the text is kept, then written to a new file (0600)
    beside FILE and renamed over it, so FILE is either the whole result or
    what it was before; when it cannot be written the text goes to the
    terminal and one line says so."""

    def __init__(self, path: str) -> None:
        import io
        import stat as st
        import tempfile

        self.path = path
        if os.path.islink(path):
            raise fail(f"-o {shown(path, 200)} is a symbolic link: perfbp does not write through "
                       f"links; give the file's own path")
        if os.path.exists(path) and not st.S_ISREG(os.stat(path).st_mode):
            raise fail(f"-o {shown(path, 200)} is not a regular file: give a file path")
        try:
            self.fd, self.tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                                                 dir=os.path.dirname(path) or ".")
        except OSError as exc:
            raise fail(f"cannot write {shown(path, 200)}: {exc.strerror}; choose another path "
                       f"with -o")
        self.buffer = io.StringIO()

    def write(self, text: str) -> int:
        return self.buffer.write(text)

    def flush(self) -> None:
        pass

    def commit(self) -> None:
        data = self.buffer.getvalue().encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.rename(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            sys.stdout.write(self.buffer.getvalue())
            raise fail(f"cannot write {shown(self.path, 200)}: {exc.strerror}; the counts are "
                       f"printed above instead")

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def _open_output(path: "str | None") -> "_Output | None":
    """Where ``-o`` puts the result (see :class:`_Output`), or None."""
    return None if path is None else _Output(path)


def _render_counts(result, sink=None) -> None:
    def out(text: str) -> None:
        typer.echo(text, file=sink)

    out("")
    out(f" Hits for {result.target}:")
    out("")
    width = max(13, max(len(f"{w.hits:,}") for w in result.watches) + 2)
    tested = any(w.matched is not None for w in result.watches)
    out(f"{'hits':>{width}}  " + (f"{'matched':>{width}}  " if tested else "") + "watch")
    for w in result.watches:
        spec = w.watch.spec
        label = w.label if w.label == spec else f"{w.label}  ({spec})"
        if tested:
            matched = f"{w.matched:>{width},}" if w.matched is not None else f"{'-':>{width}}"
            cond = f"  if {w.condition}" if w.condition is not None else ""
            out(f"{w.hits:>{width},}  {matched}  {label}{cond}")
            if w.faults:
                out(f"{'':>{width}}  {'':>{width}}  {w.faults:,} hits whose value could not "
                    f"be read (never matched)")
            if w.untested:
                out(f"{'':>{width}}  {'':>{width}}  WARNING: {w.untested:,} hits the condition "
                    f"never saw (threads started while perfbp armed): not in matched")
        else:
            out(f"{w.hits:>{width},}  {label}")
        if w.estimated:
            out(f"{'':>{width}}  estimate: {w.seen:,} seen while watched "
                f"{100 * w.coverage:.1f}% of the time, scaled")
    out("")
    end = {"exit": "target ended", "duration": "duration reached",
           "interrupt": "interrupted"}[result.ended_by]
    status = ""
    if result.exit_code is not None:
        status = (f", exit status {result.exit_code}" if result.exit_code >= 0
                  else f", killed by signal {-result.exit_code}")
    out(f" {result.elapsed:.3f} seconds ({end}{status})")
    import textwrap

    for line in _follow_lines(result):
        out(textwrap.fill(line, 79, initial_indent=" ", subsequent_indent="   "))


def _follow_lines(result) -> "list[str]":
    """What happened to named watches on the way (a copy relocation, an exec
    that moved or disarmed one), and hits the machine lost."""
    lines = []
    for w in getattr(result, "watches", ()):
        for b in getattr(w, "bindings", ()):
            if b.resolution.copied is not None:
                lines.append(f"note: {b.resolution.describe()}")
    for b in getattr(result, "bindings", ()):
        for x in b:
            if x.resolution.copied is not None:
                lines.append(f"note: {x.resolution.describe()}")
    lines += [f"note: {n}" for n in result.notes]
    for w in getattr(result, "watches", ()):
        if getattr(w, "recovered", 0):
            lines.append(f"note: {w.label}: {w.recovered:,} of its hits reached perfbp as "
                         f"debug exceptions without their status (DR6 empty: a fault of this "
                         f"machine's hypervisor) and are counted here; the kernel missed them")
    for label, n in zip(getattr(result, "labels", ()), getattr(result, "recovered", ())):
        if n:
            lines.append(f"WARNING: {label}: {n:,} more hits reached perfbp as debug "
                         f"exceptions without their status (DR6 empty: a fault of this "
                         f"machine's hypervisor): the kernel missed them, no sample exists")
    if result.unattributed:
        lines.append(f"WARNING: {result.unattributed:,} debug exception"
                     f"{'s' if result.unattributed != 1 else ''} arrived without saying which "
                     f"watch fired (DR6 empty: a fault of this machine's hypervisor); the "
                     f"kernel could not count those hits, so counts may be short by as many")
    return list(dict.fromkeys(lines))


def _unresolved(result) -> None:
    """A name no program of the run defined: exit 2 (after the counts)."""
    if result.unresolved:
        for err in result.unresolved[1:]:
            error(err.message_for("cli"))
        raise fail(result.unresolved[0].message_for("cli"))


def _status(result) -> dict:
    """How a run ends (EXIT STATUS in docs/perfbp.md), as JSON gives it:
    ``exit_status``, what perfbp exits with, and ``error`` when that is
    perfbp's own failure (2: a name no program of the run defined);
    otherwise the command's status when it ended by itself or by a signal
    (Ctrl-C, kill: 128+N for signal N), and 0 when perfbp ended it (-d) or
    launched none."""
    if result.unresolved:
        return {"exit_status": BAD_INPUT, "error": str(result.unresolved[0])}
    own = result.exit_code is not None and result.ended_by != "duration"
    return {"exit_status": plumbing.exit_status(result.exit_code) if own else 0}


@app.command(
    cls=PlainCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=SPEC_HELP + "\b\nExamples:\n"
           "  perfbp stat -w counter -- ./demo/demo         # writes to a global, by name\n"
           "  perfbp stat -w environ@libc.so.6 -- ./prog    # a library's variable\n"
           "  perfbp stat -w config.flags -p 1234           # a struct member (DWARF)\n"
           "  perfbp stat -w 0x4040a0 -- ./demo/demo        # writes to 8 bytes, launched\n"
           "  perfbp stat -w mem:0x4040a0/8:w -p 1234       # perf's spelling, a process\n"
           "  perfbp stat -w 0x601040/4:rw -t 1235          # reads+writes, one thread\n"
           "  perfbp stat -w 0x4011c0:x -- ./prog           # executions of an instruction\n"
           "  perfbp stat -w 0xffffffff81e0b940:x:k -a -d 5 # kernel code, all CPUs, 5 s\n"
           "  perfbp stat -I 1000 -w 0x4040a0 -p 1234       # hits per second\n"
           "  perfbp stat -w 0x601000/32 -- ./prog          # a range, split over 4 slots\n"
           "  perfbp stat --multiplex -w 0x601000/64 -w 0x601040 -- ./prog  # > 4 slots\n"
           "  perfbp stat --json -o n.json -w 0x4040a0 -- ./prog  # for scripts\n"
           "  perfbp stat -w head --if 'new == 0' -- ./prog  # and the writes of 0\n",
)
def stat(
    watch: Watches = None, pid: Pid = None, tid: Tid = None, all_cpus: AllCpus = False,
    cpu: Cpus = None, duration: Duration = None,
    interval: Annotated[Optional[int], typer.Option(
        "-I", "--interval", metavar="MS",
        help="Also print the hits of every interval of MS milliseconds.")] = None,
    as_json: Json = False,
    output: Annotated[Optional[str], typer.Option(
        "-o", "--output", metavar="FILE",
        help="Write the counts to FILE, not stdout (keeps them apart from the command's "
             "output).")] = None,
    no_ptrace: NoPtrace = False, multiplex: Multiplex = False, slice_ms: SliceMs = 10,
    if_: If = None, command: Command = None,
) -> None:
    """Count the hits of hardware watchpoints, exactly.

    Kernel-mode accesses to user addresses (a syscall filling a buffer, the
    ELF loader clearing .bss) are not counted unless the spec ends in :k. With
    -- CMD, perfbp exits with the command's exit status (128+N if it was killed
    by signal N), like perf stat; otherwise 0. Bad input exits 2.
    """
    args = run_args(watch, pid, tid, all_cpus, cpu, command, duration=duration,
                    multiplex=multiplex, slice_ms=slice_ms, no_ptrace=no_ptrace)
    conditions = _conditions(if_, args.watches)
    if interval is not None and interval < 10:
        raise fail(f"-I {interval} is too short: give at least 10 milliseconds")
    intervals: list = []

    def on_interval(elapsed, hits):
        if as_json:
            intervals.append({"time": round(elapsed, 6),
                              "watches": [w.as_dict() for w in hits]})
            return
        for w in hits:
            matched = f" {w.matched:>14,}" if w.matched is not None else ""
            typer.echo(f"{elapsed:12.3f} {w.hits:>14,}{matched}  {w.label}")

    sink = _open_output(output)
    try:
        result = perfbp.count(
            args.watches, target=args.target, command=args.command, duration=duration,
            interval=interval / 1000 if interval else None, on_interval=on_interval,
            on_start=lambda description, plan: _banner(result_watches(args.watches),
                                                       description, plan, args.target),
            multiplex=args.multiplex, trace=args.trace, condition=conditions)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if as_json:
        out = {**result.as_dict(), **_status(result)}
        if interval:
            out["intervals"] = intervals
        typer.echo(json.dumps(out), file=sink)
    else:
        _render_counts(result, sink)
    if sink is not None:
        sink.commit()
    _unresolved(result)
    raise typer.Exit(_status(result)["exit_status"])


def _conditions(texts: "list[str] | None", watches: list) -> "list | None":
    """The conditions of ``--if``: one for every watch, or one per watch;
    None without any.  The API reads them before it starts anything (a bad
    one: :class:`~perfbp.InvalidBreakpoint` with a ``caret``, which
    :func:`main` prints under the error: exit 2)."""
    if not texts:
        return None
    if len(texts) not in (1, len(watches)):
        raise fail(f"{len(texts)} --if conditions for {len(watches)} "
                   f"watch{'es' if len(watches) != 1 else ''}: give one for every watch, or "
                   f"one per watch (in the order of the -w options)")
    if len(texts) == 1 and len(watches) > 1:
        typer.echo(f"perfbp: --if {shown(texts[0], 60)} applies to each of the {len(watches)} "
                   f"watches (give one --if per -w to tell them apart)", err=True)
    return list(texts)  # read (a caret under a mistake) before anything runs: see Run


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"


def _render_report(report, top: int) -> None:
    """The per-watch summary shared by ``record`` and ``report``."""
    for w in report.watches:
        spec = f"mem:{w.address:#x}/{w.length}:{w.access}"
        title = w.name if w.name == spec else f"{w.name}  ({spec})"
        typer.echo(title)
        for b in w.bindings:
            if "copy_of" in b:
                typer.echo(f"  copy relocation: watched in {os.path.basename(b['object'])}'s "
                           f"copy; {os.path.basename(b['copy_of']['object'])}'s is unused")
        if len(w.bindings) > 1:
            typer.echo("  armed in: " + ", ".join(
                f"{os.path.basename(b['program'])}/{b['pid']} ({b['hits']:,} hits)"
                for b in w.bindings))
        if w.recovered:
            typer.echo(f"  {w.recovered:,} more hits reached perfbp without their status "
                       f"(DR6): the kernel missed them, no sample")
        sampled = f", 1 sample every {w.period} hits" if w.period > 1 else ""
        line = f"  samples {w.hits:,}"
        if w.lost is not None:
            line += f"   lost {w.lost:,}"
        if w.estimated:
            line += (f"   hits while watched {w.kernel_hits:,} ({100 * w.coverage:.1f}% of the "
                     f"time): estimate {w.estimate:,} for the run")
            if w.accounted:
                line += "; every hit seen accounted for"
        elif w.matched is not None and w.kernel_hits is not None:
            line += f"   matched {w.matched:,} of {w.kernel_hits:,} hits"
            if w.condition is not None:
                line += f" (if {w.condition})"
            line += (": every match accounted for" if w.accounted
                     else ": MISMATCH (samples + lost != matched)")
        elif w.kernel_hits is not None:
            line += f"   kernel's hit count {w.kernel_hits:,}{sampled}"
            if w.accounted:
                line += ": every hit accounted for"
            else:
                line += ": MISMATCH (samples + lost != hits)"
        elif sampled:  # perf's -c N: no final count in the file, but the period
            line += f"   (1 sample every {w.period:,} hits: about {w.hits * w.period:,} hits)"
        typer.echo(line)
        if w.writers:
            typer.echo("  writers (instruction after the access):")
            for wr in w.writers[:top]:
                where = str(wr.location) + (f" ({wr.source})" if wr.source else "")
                typer.echo(f"    {wr.samples:>12,} {_pct(wr.samples, w.hits)}  "
                           f"{where:<32} {wr.location.short_dso}")
        if w.values:
            _render_values(w)
        if w.stacks:
            _render_stacks(w, top)
        if w.threads:
            typer.echo("  threads:")
            for t in w.threads[:top]:
                typer.echo(f"    {t.samples:>12,} {_pct(t.samples, w.hits)}  {t.comm}/{t.tid}")
        typer.echo("")
    import textwrap

    for note in report.notes:
        typer.echo(textwrap.fill(f"note: {note}", 79, subsequent_indent="  "))
    if report.groups:
        typer.echo(f"{'samples':>14}  {'':6}  key")
        for g in report.groups:
            extra = f"  {g['dso']}" if g.get("dso") else ""
            typer.echo(f"{g['samples']:>14,}  {_pct(g['samples'], report.samples)}  {g['key']}{extra}")
        typer.echo("")


def _render_values(w) -> None:
    """The values written and the old -> new transitions, most frequent
    first: in decimal, or all in hex when one is large (a pointer, a mask)."""
    shown = [v for v, _n in w.values] + [x for o, v, _n in w.transitions for x in (o, v)]
    digits = 2 * min(max(w.length, 1), 8)
    value = "{:,}".format if max(shown, default=0) < 65536 else f"{{:#0{2 + digits}x}}".format
    typer.echo("  values written (new):")
    for v, hits in w.values:
        typer.echo(f"    {hits:>12,} {_pct(hits, w.hits)}  {value(v)}")
    typer.echo("  transitions (old -> new):")
    for o, v, hits in w.transitions:
        typer.echo(f"    {hits:>12,} {_pct(hits, w.hits)}  {value(o)} -> {value(v)}")


#: frames shown of a call stack, innermost first
STACK_FRAMES = 12


def _render_stacks(w, top: int) -> None:
    """A watch's call stacks, a frame a line (innermost first); a
    frame-pointer stack that cannot be true ends with ``<- ??`` where it
    went wrong, and a hint says how to record true ones."""
    typer.echo("  call stacks" + (" (frame pointers)" if w.call_graph == "fp" else "") + ":")
    for stack in w.stacks[:top]:
        frames = [str(f) for f in stack.frames] + ([] if stack.reliable else ["??"])
        typer.echo(f"    {stack.samples:>12,} {_pct(stack.samples, w.hits)}  {frames[0]}")
        for f in frames[1:STACK_FRAMES]:
            typer.echo(f"{'':25}<- {f}")
        if len(frames) > STACK_FRAMES:
            typer.echo(f"{'':25}<- ... ({len(frames) - STACK_FRAMES} more)")
    if not all(stack.reliable for stack in w.stacks[:top]):
        typer.echo("  ??: unreliable: the walk of the frame pointers went wrong there (code "
                   "built\n    without them, or a function that sets none up); record with "
                   "--call-graph\n    dwarf to unwind with the CFI instead")


def _report_csv(report) -> None:
    import csv

    out = csv.writer(sys.stdout)
    if report.groups:
        out.writerow(["key", "samples"])
        for g in report.groups:
            out.writerow([g["key"], g["samples"]])
        return
    values = any(w.matched is not None for w in report.watches)
    out.writerow(["watch", "address", "length", "access", "hits", "lost", "kernel_hits",
                  "where", "dso"] + (["old", "new"] if values else []) + ["samples"])
    blank = ["", ""] if values else []
    for w in report.watches:
        base = [w.name, w.address, w.length, w.access, w.hits,
                "" if w.lost is None else w.lost,
                "" if w.kernel_hits is None else w.kernel_hits]
        if not w.writers:
            out.writerow(base + ["", ""] + blank + [0])
        for wr in w.writers:
            out.writerow(base + [str(wr.location), wr.location.dso] + blank + [wr.samples])
        # with values: a row per old -> new transition (no writer)
        for o, v, n in w.transitions:
            out.writerow(base + ["", "", o, v, n])


@app.command(
    cls=PlainCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=SPEC_HELP + "\b\nExamples:\n"
           "  perfbp record -w counter -- ./demo/demo   # every write, into perfbp.data\n"
           "  perfbp record -w buf/64:rw -p 1234 -d 10  # a 64-byte buffer, 10 s\n"
           "  perfbp record -g -w config.flags -- ./prog  # with call stacks\n"
           "  perfbp record --call-graph dwarf -w counter -- ./prog  # no frame pointers\n"
           "  perfbp record --period 100 -w 0x4040a0 -a  # every 100th hit, all CPUs\n"
           "  perfbp record -o run1.data -w table[3] -- ./prog  # another file\n"
           "  perfbp record -o - -w counter -- ./prog | perf report -i -  # a pipe\n"
           "  perfbp record --multiplex -w a -w b -w c -w d -w e -- ./prog  # > 4 slots\n"
           "  perfbp record -w p --if 'old != 0 and new == 0' -- ./prog  # who cleared p\n"
           "  perfbp record -w state --values -p 1234 -d 5  # every write, old and new\n",
)
def record(
    watch: Watches = None,
    output: Annotated[str, typer.Option(
        "-o", "--output", metavar="FILE",
        help="The recording (perf.data format; an existing file becomes FILE.old; - for "
             "standard output, pipe mode).")] = "perfbp.data",
    pid: Pid = None, tid: Tid = None, all_cpus: AllCpus = False, cpu: Cpus = None,
    duration: Duration = None,
    period: Annotated[int, typer.Option(
        "--period", "-c", metavar="N",
        help="Sample every Nth hit (hit counts stay exact).")] = 1,
    callchain: Annotated[bool, typer.Option(
        "-g", "--callchain",
        help="Record call stacks by the frame pointers (--call-graph fp).")] = False,
    call_graph: Annotated[Optional[str], typer.Option(
        "--call-graph", metavar="fp|dwarf[,SIZE]",
        help="How to record call stacks: fp (as -g), or dwarf: SIZE bytes of user stack "
             "(default 8192) and the registers in each sample, unwound by report with "
             "the CFI; right in code built without frame pointers.")] = None,
    ring_pages: Annotated[Optional[int], typer.Option(
        "--ring-pages", metavar="PAGES",
        help="Ring buffer pages per CPU (power of two; default 512, 4096 with "
             "--call-graph dwarf).")] = None,
    top: Top = 5, as_json: Json = False, no_ptrace: NoPtrace = False,
    multiplex: Multiplex = False, slice_ms: SliceMs = 10, if_: If = None,
    values: Annotated[bool, typer.Option(
        "--values", help="Each sample carries the watched value before and after the hit "
                         "(old, new), read in the kernel (implied by --if).")] = False,
    command: Command = None,
) -> None:
    """Sample every hit into a recording perf can read, then summarize who
    touched each watch.

    Each hit becomes a sample (ip, thread, time, CPU, address; -g or
    --call-graph adds the call stack). At the end perfbp checks that
    samples + lost samples equal
    the kernel's own hit count, per watch, and says so. With -- CMD the exit
    status is the command's; bad input exits 2.
    """
    if output == "-" and as_json:
        raise fail("-o - writes the recording to standard output, and --json prints "
                   "there too: drop one of them")
    if output == "-" and os.isatty(1):
        raise fail("-o - writes the recording (binary, perf.data pipe mode) to standard "
                   "output, which is a terminal: pipe it (| perf report -i -) or "
                   "redirect it (> FILE)")
    args = run_args(watch, pid, tid, all_cpus, cpu, command, duration=duration,
                    multiplex=multiplex, slice_ms=slice_ms, no_ptrace=no_ptrace)
    if not 1 <= period <= MAX_PERIOD:
        raise fail(f"--period {shown(str(period))} must be from 1 to {MAX_PERIOD} (2^63-1)")
    conditions = _conditions(if_, args.watches)
    if (conditions or values) and period != 1:
        raise fail(f"--period {period} samples one hit in {period}, and "
                   f"{'--if' if conditions else '--values'} needs every hit (old is the "
                   f"value of the hit before): drop one of them")
    if ring_pages is not None and (ring_pages < 1 or ring_pages & (ring_pages - 1)
                                   or ring_pages > MAX_RING_PAGES):
        raise fail(f"--ring-pages {shown(str(ring_pages))} must be a power of two from 1 "
                   f"to {MAX_RING_PAGES} (1 GiB a CPU: the most the kernel maps)")
    graph = plumbing.CallGraph.parse(call_graph if call_graph is not None else callchain)
    try:
        result = perfbp.record(args.watches, output, target=args.target,
                               command=args.command, duration=duration, period=period,
                               callchain=graph or False, ring_pages=ring_pages,
                               cmdline=["perfbp", "record"] + sys.argv[2:],
                               on_start=lambda d, plan: _banner(
                                   result_watches(args.watches), d, plan, args.target,
                                   debug_note=args),
                               multiplex=args.multiplex, trace=args.trace,
                               condition=conditions, values=values)
    except perfbp.PerfbpError as exc:
        if exc.errno != errno.EPIPE:
            raise
        # the reader of -o - is gone (typer would exit 1 in silence on EPIPE)
        raise fail(f"{exc} (the reader closed the pipe; the command was stopped)") from None
    _record_summary(result, output, top, as_json)


def _record_summary(result, output: str, top: int, as_json: bool) -> None:
    """What ``record`` prints at the end: the accounting lines (stderr), then
    the report of the recording (unless it went down a pipe)."""
    samples = sum(s.samples for s in result.stats)
    lost = sum(s.lost for s in result.stats)
    typer.echo(f"[ perfbp record: wrote {result.bytes_written / 1e6:.3f} MB to {result.path}: "
               f"{samples:,} samples, {lost:,} lost ]", err=True)
    for s, label in zip(result.stats, result.labels):
        if not s.complete:
            counted = (f"its condition matched {s.matched:,} hits" if s.matched is not None
                       else f"the kernel counted {s.hits:,} hits")
            typer.echo(f"perfbp: WARNING: watch {label}: {counted} but {s.samples:,} samples "
                       f"+ {s.lost:,} lost = {s.samples + s.lost:,}: {s.missing:,} hits "
                       f"unaccounted for", err=True)
        elif s.lost:
            typer.echo(f"perfbp: watch {label}: {s.lost:,} samples lost (ring full); use "
                       f"--ring-pages or --period to keep up", err=True)
    if result.sideband_lost:
        typer.echo(f"perfbp: {result.sideband_lost:,} thread and mapping records lost (ring "
                   f"full): some threads or code may show as [unknown]; use --ring-pages",
                   err=True)
    for line in _follow_lines(result):
        typer.echo(f"perfbp: {line}", err=True)
    if output == "-":  # the reader at the other end of the pipe summarizes
        _unresolved(result)
        raise typer.Exit(_status(result)["exit_status"])
    report = perfbp.load_report(result.path, top=top)
    if as_json:
        out = report.as_dict()
        out.update({"target": result.target, "elapsed_seconds": round(result.elapsed, 6),
                    "ended_by": result.ended_by, "exit_code": result.exit_code,
                    **_status(result)})
        if result.notes:
            out["notes"] = list(result.notes)
        if result.unattributed:
            out["unattributed_traps"] = result.unattributed
        recovered = dict(zip(result.labels, result.recovered))
        for w in out.get("watches", ()):
            if recovered.get(w.get("name")):
                w["recovered"] = recovered[w["name"]]  # hits with no sample: see docs
        typer.echo(json.dumps(out))
    else:
        typer.echo("")
        _render_report(report, top)
    _unresolved(result)
    raise typer.Exit(_status(result)["exit_status"])


@app.command(
    cls=PlainCommand,
    epilog="\b\nExamples:\n"
           "  perfbp report                              # summarize perfbp.data\n"
           "  perfbp report -i perf.data                 # perf's own mem: recording\n"
           "  perfbp report --sort thread                # samples per thread\n"
           "  perfbp report --sort symbol --top 20       # who writes, over all watches\n"
           "  perfbp report --format json | jq .watches  # for scripts\n"
           "  perfbp report --format csv > hits.csv      # for spreadsheets\n",
)
def report(
    input: str = typer.Option("perfbp.data", "-i", "--input", metavar="FILE",
                              help="The recording (perfbp's or perf's perf.data; - for "
                                   "standard input)."),
    fmt: str = typer.Option("table", "--format", "-f", metavar="FORMAT",
                            help="table, json or csv."),
    sort: str = typer.Option("watch", "--sort", "-s", metavar="KEY",
                             help="watch (default), symbol, thread or cpu."),
    top: Top = 10,
) -> None:
    """Who touched the watched memory: per watch, the samples, lost
    samples, writers (function+offset) and threads, from a recording made by
    perfbp record or perf record -e mem:...
    """
    if fmt not in ("table", "json", "csv"):
        raise fail(f"--format {fmt!r} is not one of table, json, csv")
    if sort not in plumbing.SORT_KEYS:
        raise fail(f"--sort {sort!r} is not one of {', '.join(plumbing.SORT_KEYS)}")
    if input == "-":
        rep = _report_stdin(top, sort)
    else:
        rep = perfbp.load_report(input, top=top, sort=sort)
    if rep.truncated:
        typer.echo(f"perfbp: {shown(input, 200)} was cut short (the recording did not finish); "
                   f"reporting the {rep.samples:,} samples it holds", err=True)
    if fmt == "json":
        typer.echo(json.dumps(rep.as_dict()))
    elif fmt == "csv":
        _report_csv(rep)
    else:
        typer.echo(f"# {rep.samples:,} samples, {rep.lost:,} lost, from {input} "
                   f"(recorded by {rep.producer})")
        typer.echo("")
        _render_report(rep, top)


def _report_stdin(top: int, sort: str):
    """``report -i -``: the recording from standard input (a pipe from
    ``perfbp record -o -`` or ``perf record -o -``), spooled to a private
    temporary file first, so that it is read as any recording is."""
    import tempfile

    if os.isatty(0):
        raise fail("-i - reads a recording from standard input, which is a terminal: "
                   "pipe one in (perfbp record -o - ... | perfbp report -i -)")
    import shutil

    spool = tempfile.mkdtemp(prefix="perfbp-stdin-")  # 0700, ours alone
    try:
        path = os.path.join(spool, "stdin.data")
        with open(path, "wb") as f:
            while True:
                chunk = os.read(0, 1 << 20)
                if not chunk:
                    break
                f.write(chunk)
        rep = perfbp.load_report(path, top=top, sort=sort)
        rep.path = "-"
        return rep
    except OSError as exc:
        raise fail(f"cannot spool standard input to {spool}: {exc.strerror}; set TMPDIR "
                   f"to a directory with room") from None
    finally:
        shutil.rmtree(spool, ignore_errors=True)


@app.command(
    cls=PlainCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=SPEC_HELP + "\b\nExamples:\n"
           "  perfbp top -w counter -- ./demo/demo       # live hits of a global\n"
           "  perfbp top -w counter -w config.flags -p 1234  # beside a running program\n"
           "  perfbp top -w 0x4040a0 -a --interval 2     # all CPUs, every 2 s\n"
           "  perfbp top -w counter -p 1234 | tee log    # plain lines when piped\n"
           "  perfbp top -w refcnt/4 --if 'new > 1000' -p 1234  # and the writes over 1000\n",
)
def top(
    watch: Watches = None, pid: Pid = None, tid: Tid = None, all_cpus: AllCpus = False,
    cpu: Cpus = None,
    interval: Annotated[float, typer.Option("--interval", "-i", metavar="SECONDS",
                                            help="Seconds between screen updates.")] = 1.0,
    top_n: Top = 5, no_ptrace: NoPtrace = False, multiplex: Multiplex = False,
    slice_ms: SliceMs = 10, if_: If = None,
    command_output: Annotated[Optional[str], typer.Option(
        "--command-output", metavar="FILE",
        help="Where a launched command's output goes (default: on a terminal, a new file "
             "in $TMPDIR, so that it cannot draw over the view; the view and the end name "
             "it).")] = None,
    command: Command = None,
) -> None:
    """A live view of every hit: per watch the hits, hits per second, a
    sparkline (one column per interval) and the top writer, and the busiest
    threads. q or Ctrl-C quits and prints the same summary as perfbp record.
    Piped, it prints one line per watch per interval instead.
    """
    from . import tui

    args = run_args(watch, pid, tid, all_cpus, cpu, command, multiplex=multiplex,
                    slice_ms=slice_ms, no_ptrace=no_ptrace)
    conditions = _conditions(if_, args.watches)
    if not math.isfinite(interval):
        raise fail(f"--interval {interval} is not a number of seconds: give one like 0.5 or 2")
    if interval < 0.05:
        raise fail(f"--interval {interval} is too short: give at least 0.05 seconds")
    if command_output is not None and not args.command:
        raise fail("--command-output is where a launched command's output goes: give -- CMD")
    output = command_output  # the command must not draw over the view: its output to a file
    if args.command and output is None and tui.is_terminal():
        output = tui.output_file()
    try:
        session = perfbp.LiveSession(args.watches, target=args.target, command=args.command,
                                     interval=interval, trace=args.trace,
                                     multiplex=args.multiplex, command_output=output,
                                     condition=conditions)
    except BaseException:
        if output is not None and command_output is None:
            os.unlink(output)  # the file made for it: nothing ran
        raise
    try:
        _debug_note(args)
        slots = (session.mux.nslots if session.mux is not None
                 else sum(len(w.pieces) for w in session.watches))
        quit_view = tui.run(session, interval=interval, slots=slots,
                            capacity=session.plan.capacity)
        session.stop()
        report = session.summary(top_n)
    finally:
        session.close()
    typer.echo("")
    _render_report(report, top_n)
    if output is not None:
        typer.echo(f"perfbp: {tui.output_note(output, made=command_output is None)}", err=True)
    for f in session.figures:
        if not f.complete:
            counted = (f"its condition matched {f.matched:,} hits" if f.matched is not None
                       else f"the kernel counted {f.hits:,} hits")
            typer.echo(f"perfbp: WARNING: watch {f.label}: {counted} but {f.samples:,} "
                       f"samples + {f.lost:,} lost = {f.samples + f.lost:,}", err=True)
    # the command's status, as stat's (EXIT STATUS in docs/perfbp.md); 0 when
    # the user quit the view with q and perfbp ended the command, as -d does
    if session.exit_code is not None and not quit_view:
        raise typer.Exit(plumbing.exit_status(session.exit_code))


@app.command(
    cls=PlainCommand,
    context_settings={"allow_interspersed_args": False},
    epilog=SPEC_HELP + "\b\nExamples:\n"
           "  perfbp slots -w 0x601040/16 -w 0x601080 -p 1234  # would these fit?\n"
           "  perfbp slots --json -w 0x601001/8 -- ./prog      # 1+2+4+1: 4 slots\n"
           "  perfbp slots --probe                             # measure the slots here\n"
           "  perfbp slots --probe -p 1234                     # a process's, and holders\n"
           "  perfbp slots --probe --json                      # the same for scripts\n",
)
def slots(
    watch: Watches = None, pid: Pid = None, tid: Tid = None, all_cpus: AllCpus = False,
    cpu: Cpus = None,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Measure how many breakpoints fit here, opening and closing real "
                        "ones.")] = False,
    as_json: Json = False, command: Command = None,
) -> None:
    """Plan watches onto the debug-register slots without opening anything:
    the pieces each watch takes, the slots per thread and CPU, whether it
    fits and why. With --probe, measure the real capacity instead (like
    perf's tests/bp_account.c); with --probe -p PID or -t TID, the free slots
    of another process's threads, and who holds the rest (gdb, perf).
    """
    if probe:
        if watch or all_cpus or cpu or command:
            raise fail("--probe measures this thread's slots, or with -p PID or -t TID "
                       "another's: give it no watches, -a, -C or command")
        if pid is not None or tid is not None:
            return _probe_other(resolve_target(pid, tid, False, None, []), as_json)
        result = perfbp.probe()
        if as_json:
            typer.echo(json.dumps({**result, "per_cpu": {str(k): v for k, v in result["per_cpu"].items()},
                                   "cpu_slots": {str(k): v for k, v in result["cpu_slots"].items()}}))
            return
        shared = {True: "shared by data and execute breakpoints",
                  False: "data and execute breakpoints have separate slots",
                  None: "no breakpoint could be opened"}[result["shared_data_execute"]]
        typer.echo(f"this thread can hold {result['task_slots']} breakpoints on every CPU "
                   f"({shared})")
        for c, n in sorted(result["per_cpu"].items()):
            typer.echo(f"  CPU {c}: {n} for this thread, {result['cpu_slots'][c]} CPU-wide")
        return
    args = run_args(watch, pid, tid, all_cpus, cpu, command)
    watches, target, command = args.watches, args.target, args.command or []
    if not all(isinstance(w, perfbp.Watch) for w in watches):  # symbols: look them up
        if target is None:
            watches = plumbing.resolve_in_file(watches, command)
        elif target.kind == "cpus":
            raise fail("a watch on a symbol needs a process to look it up in: -p PID or -- CMD")
        else:
            watches = perfbp.resolve_watches(watches, target.pid)
    plan = perfbp.plan(watches, target)
    if as_json:
        typer.echo(json.dumps({**plan.as_dict(), "explanation": plan.explain("cli")}))
        return
    for w in plan.watches:
        pieces = ", ".join(f"{p.address:#x}/{p.length}" for p in w.pieces)
        typer.echo(f"{w.label}: {w.describe_pieces()}: {pieces}")
        if w.warning:
            typer.echo(f"  WARNING: {w.warning}")
    typer.echo("")
    typer.echo(f"{'fits' if plan.fits else 'does NOT fit'}: needs {plan.slots_needed} "
               f"slot{'s' if plan.slots_needed != 1 else ''}, {plan.free} free "
               f"(capacity {plan.capacity})")
    typer.echo(plan.explain("cli"))


def _probe_other(target: "perfbp.Target", as_json: bool) -> None:
    """``slots --probe -p PID`` / ``-t TID``: each thread's free slots, and
    who holds the others."""
    result = perfbp.probe(target=target)
    if as_json:
        for t in result["threads"]:
            t["per_cpu"] = {str(k): v for k, v in t["per_cpu"].items()}
        typer.echo(json.dumps(result))
        return
    typer.echo(f"free debug-register slots in {result['target']} (of "
               f"{result['capacity']} per thread):")
    for t in result["threads"]:
        cpus = ", ".join(f"CPU {c}: {n}" for c, n in sorted(t["per_cpu"].items()))
        typer.echo(f"  thread {t['tid']} ({t['comm']}): {t['free']} on every CPU ({cpus})")
    if any(t["free"] < result["capacity"] for t in result["threads"]):
        import textwrap

        typer.echo(textwrap.fill(f"the others are {result['held_by']}", 79))


@app.command(
    cls=PlainCommand,
    epilog="\b\nExamples:\n"
           "  perfbp check              # a report; exit status 0 if watchpoints work\n"
           "  perfbp check --json       # the same for scripts\n",
)
def check(as_json: Json = False) -> None:
    """Test this machine: breakpoint PMU, privileges, and whether a real
    watchpoint fires and counts exactly (some VMs silently never fire).

    Exit status 0 when watchpoints work here, 1 otherwise.
    """
    report = plumbing.run_checks()
    if as_json:
        typer.echo(json.dumps(report.as_dict()))
    else:
        marks = {True: "ok  ", False: "FAIL", None: "    "}
        for item in report.items:
            typer.echo(f"{marks[item.ok]} {item.name:<13} {item.summary}")
        typer.echo("")
        typer.echo("hardware watchpoints work here" if report.works
                   else "hardware watchpoints do NOT work here")
    raise typer.Exit(0 if report.works else 1)


def _parser_errors() -> "tuple[type, ...]":
    """The option parser's error classes (typer bundles its own click in
    recent releases; older ones use the click package)."""
    found = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = __import__(module, fromlist=["ClickException"])
        except ImportError:
            continue
        found.append(mod.ClickException)
    return tuple(found)


def main(argv: "list[str] | None" = None) -> None:
    """Entry point of the ``perfbp`` script: one line per error, exit 2."""
    try:
        code = app(args=argv, prog_name="perfbp", standalone_mode=False)
    except _parser_errors() as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.ctx.get_help())
            sys.exit(0)
        error(f"{exc.format_message()} (see perfbp --help)")
        sys.exit(BAD_INPUT)
    except perfbp.PerfbpError as exc:
        error(exc.message_for("cli"))  # the API's words for what to do, as options
        text = getattr(exc, "text", "")
        if callable(getattr(exc, "caret", None)) and text.strip() and text.isprintable() \
                and len(text) <= 200:  # a condition's mistake, pointed at (quoted above)
            typer.echo(exc.caret(), err=True)
        sys.exit(BAD_INPUT)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("perfbp: interrupted", err=True)
        sys.exit(130)
    sys.exit(code or 0)


def console() -> None:
    """The ``perfbp`` script and ``python -m perfbp``: :func:`main`, then an
    exit that skips tearing the interpreter down.

    Freeing every module and object at exit costs 20 to 30 ms on this kind of
    machine (page-table work goes through the hypervisor), about a sixth of a
    short command's run.  Once the command is done, the standard streams are
    flushed and the exit handlers run (``atexit``, as a normal exit runs
    them); then the process ends with ``os._exit``.  A flush that fails (a
    closed pipe) or a live non-daemon thread takes the normal exit instead, so
    its reporting is Python's own.
    """
    import atexit
    import threading

    try:
        main()
    except SystemExit as done:
        code = 0 if done.code is None else done.code
    else:  # pragma: no cover - main always exits
        code = 0
    if not isinstance(code, int) or any(t.is_alive() and not t.daemon for t in threading.enumerate()
                                        if t is not threading.main_thread()):
        sys.exit(code)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console()
