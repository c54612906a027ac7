"""``perfbp top`` on the real kernel: the live view in a real terminal, the
plain lines when piped, Ctrl-C, and bad input.

The workload is ``tests/workloads/top_steady.c``: ``top_steady N M STATUS
[FIFO [noterm]]`` stores to its global ``counter`` exactly N times (in
``bump_counter``) and to ``busier`` exactly M times (in ``bump_busier``),
then, given a FIFO, waits on it (the test never opens it for writing, so the
program stays alive with its counts final until perfbp ends it; ``noterm``:
ignoring SIGTERM), and exits with STATUS.  It prints nothing; a test of a
command that prints runs it from ``sh -c``.  Its ``_PyRuntime`` (never
written) gives long names: ``_PyRuntime.ceval.gil.switch_number``,
``_PyRuntime.ceval.gil.locked``.

The terminal is a detached tmux session of 120x40 (or narrower) on a tmux
server of this test run's own (``tmux -L``), one session per test (or module fixture),
always killed at the end.  Its command line is the only shell in this file:
``/bin/sh -c "unset COLUMNS LINES; cd ROOT && PYTHON -m perfbp top ...;
echo perfbp-exit-status $?; sleep 60"``, so that the pane outlives perfbp
and shows its exit status and final summary.  Everything else runs
``python -m perfbp`` from the repository root, never through a shell.

"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel  # every test arms hardware breakpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
PERFBP = [sys.executable, "-m", "perfbp"]
TMUX = shutil.which("tmux") or "/usr/bin/tmux"
SOCKET = f"perfbp-test-top-{os.getpid()}"  # this run's own tmux server

N = 20011             # top_steady: stores to `counter` (a prime)
N_FIRST = 1009        # ... a few milliseconds of them, before the first frame
N_QUIET = 10007       # the sort test: `counter` ...
N_BUSY = 20011        # ... and `busier`, the busier watch
EXIT_STATUS = 7       # top_steady's exit status when it ends by itself
TIMEOUT = 30          # seconds; nothing comes near it unless perfbp hangs
SLOT_WAIT = 15        # seconds to wait for debug-register slots held elsewhere
EXIT_MARK = "perfbp-exit-status"
SIGTERM_STATUS = 128 + signal.SIGTERM

# one plain line per watch per interval, when stdout is not a terminal
PLAIN = re.compile(r"^\s*(\d+\.\d+) (\S+) hits=(\d+) rate=(\d+)/s samples=(\d+) lost=(\d+)"
                   r"(?: recovered=(\d+))?$")


# -- the workload ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def steady(build) -> Path:
    """top_steady, built as PIE (so its globals move with ASLR: perfbp
    resolves them by name in the running image) with -g (source lines)."""
    return build("top_steady.c", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fPIE", "-pie")


@pytest.fixture
def fifo(tmp_path) -> Path:
    """A FIFO nobody writes: top_steady waits on it until perfbp ends it."""
    path = tmp_path / "hold"
    os.mkfifo(path)
    return path


def running_copies(exe: Path) -> "list[int]":
    """Pids of live processes running ``exe`` (zombies have no exe link)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/exe") == str(exe):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def alive(pid: int, exe: Path) -> bool:
    return pid in running_copies(exe)


def end_leftovers(exe: Path) -> None:
    """Kill (by pid) copies of the workload a failed test left running."""
    for pid in running_copies(exe):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def children(pid: int) -> "list[int]":
    """The children of a process (every thread's), from /proc."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def no_free_slot(text: str) -> bool:
    """perfbp could not arm: another program (another suite's -a watches,
    gdb) holds every debug-register slot; tests wait for them to come back."""
    return "(ENOSPC)" in text


def summary_lines(text: str, n: int, writer: str = "bump_counter") -> None:
    """The final summary of a watch on ``counter`` with ``n`` hits, as
    ``perfbp record`` prints it (less the hits the machine delivered
    without their status, which the summary counts apart: no sample)."""
    n -= recovered_in(text)
    assert re.search(r"^counter  \(mem:0x[0-9a-f]+/8:w\)$", text, re.M), text
    line = (f"  samples {n:,}   lost 0   kernel's hit count {n:,}: "
            f"every hit accounted for")
    assert re.search("^" + re.escape(line) + "$", text, re.M), text
    assert re.search(rf"^\s+{n:,} 100\.0%  {writer}\+0x[0-9a-f]+ \(top_steady\.c:\d+\)",
                     text, re.M), text
    assert re.search(rf"^\s+{n:,} 100\.0%  top_steady/\d+$", text, re.M), text


# -- a real terminal: tmux -------------------------------------------------------------

class Terminal:
    """``perfbp top ARGS`` in a detached tmux session of ``width`` x 40."""

    def __init__(self, name: str, width: int = 120) -> None:
        self.name = f"{name}-{os.getpid()}"
        self.width = width

    def _tmux(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([TMUX, "-L", SOCKET, "-f", "/dev/null", *args],
                              capture_output=True, text=True, timeout=10)
        if check:
            assert proc.returncode == 0, f"tmux {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def start(self, *args: str) -> None:
        argv = [*PERFBP, "top", *args]
        # COLUMNS and LINES unset: rich then asks the terminal (a shell that
        # started before tmux sized the window may have exported 80x24)
        line = (f"unset COLUMNS LINES; cd {shlex.quote(str(REPO_ROOT))} && "
                f"{shlex.join(argv)}; echo {EXIT_MARK} $?; sleep 60")
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(self.width), "-y", "40",
                   "/bin/sh", "-c", line)

    def screen(self, history: bool = False) -> str:
        """The visible screen; with ``history``, the scrollback too."""
        extra = ["-S", "-1000"] if history else []
        return self._tmux("capture-pane", "-p", "-t", self.name, *extra)

    def wait_for(self, ready, what: str, history: bool = False,
                 timeout: float = TIMEOUT) -> str:
        """Poll the screen until ``ready(screen)``; return that screen."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen(history)
            if ready(text):
                return text
            if EXIT_MARK in text and not ready(self.screen(history=True)):
                raise AssertionError(f"perfbp ended before {what}:\n"
                                     f"{self.screen(history=True)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            time.sleep(0.1)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def exit_status(self) -> int:
        """perfbp's exit status, once the shell has printed it."""
        text = self.wait_for(lambda s: re.search(rf"^{EXIT_MARK} \d+$", s, re.M),
                             "perfbp to exit", history=True)
        return int(re.search(rf"^{EXIT_MARK} (\d+)$", text, re.M).group(1))

    def kill(self) -> None:
        self._tmux("kill-session", "-t", self.name, check=False)


def _socket_path() -> Path:
    """Where tmux keeps this run's server socket (tmux(1): -L)."""
    base = os.environ.get("TMUX_TMPDIR") or "/tmp"
    return Path(base) / f"tmux-{os.getuid()}" / SOCKET


@pytest.fixture(scope="module", autouse=True)
def tmux_server():
    """This run's tmux server: gone at the end, its socket file too."""
    yield
    subprocess.run([TMUX, "-L", SOCKET, "kill-server"], capture_output=True, timeout=10)
    try:
        _socket_path().unlink()
    except FileNotFoundError:
        pass


@pytest.fixture
def terminal(request, steady):
    """A factory of :class:`Terminal` sessions; each is killed at the end,
    and so is any copy of the workload left behind."""
    made: list[Terminal] = []

    def make(width: int = 120) -> Terminal:
        t = Terminal(f"{request.node.name[:40]}-{len(made)}", width)
        made.append(t)
        return t

    yield make
    for t in made:
        t.kill()
    end_leftovers(steady)


def start_armed(term: Terminal, *args: str) -> "tuple[str, int]":
    """Start ``perfbp top ARGS`` in ``term`` and wait for its header;
    return the screen and the launched target's pid (from the header).
    Waits for busy debug-register slots, as the other CLI tests do."""
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        term.start(*args)
        text = term.wait_for(lambda s: "perfbp top" in s or EXIT_MARK in s, "the header")
        if "perfbp top" in text:
            break
        term.kill()
        if not no_free_slot(text) or time.monotonic() > deadline:
            raise AssertionError(f"perfbp top did not start:\n{text}")
        time.sleep(0.5)
    m = re.search(r"perfbp top  command\s+'.*?'\s+\(pid\s+(\d+)\)", text, re.S)
    assert m, text
    return text, int(m.group(1))


def watch_row(screen: str, label: str) -> "tuple[int, int, str]":
    """The row of a watch on the screen: (line number, hits, the row)."""
    for i, line in enumerate(screen.splitlines()):
        m = re.match(rf"^{re.escape(label)}\s+([\d,]+)\s", line)
        if m:
            return i, int(m.group(1).replace(",", "")), line
    raise AssertionError(f"no row for {label}:\n{screen}")


def thread_samples(screen: str, comm: str, tid: int) -> "int | None":
    """A thread's samples in the busiest-threads panel, or None."""
    m = re.search(rf"^{re.escape(comm)}/{tid}\s+([\d,]+)\s*$", screen, re.M)
    return int(m.group(1).replace(",", "")) if m else None


def settled(pid: int):
    """What tells that the view is final: the watch's hits are N (hits the
    machine delivered without their status included: they have no sample),
    and the thread's samples have not changed for over an interval."""
    seen = {"n": None, "since": 0.0}

    def ready(screen: str) -> bool:
        try:
            hits = watch_row(screen, "counter")[1]
        except AssertionError:
            return False
        n, now = thread_samples(screen, "top_steady", pid), time.monotonic()
        if hits != N or n is None or n != seen["n"]:
            seen.update(n=n, since=now)
            return False
        return now - seen["since"] > 1.0  # the interval is 0.5 s
    return ready


def recovered_in(text: str) -> int:
    """Hits the final summary counts apart (no sample: their status was lost)."""
    m = re.search(r"^\s+([\d,]+) more hits reached perfbp without their status", text, re.M)
    return int(m.group(1).replace(",", "")) if m else 0


@pytest.fixture(scope="module")
def quit_with_q(steady, tmp_path_factory):
    """One run in a terminal: ``perfbp top -w counter --interval 0.5`` on
    top_steady (N stores, then it waits); the screens once the count is
    final, then ``q``: the whole pane, perfbp's exit status, and whether
    the target is still alive."""
    hold = tmp_path_factory.mktemp("top-q") / "hold"
    os.mkfifo(hold)
    term = Terminal("top-q")
    try:
        header, pid = start_armed(term, "-w", "counter", "--interval", "0.5", "--",
                                  str(steady), str(N), "0", "0", str(hold))
        live = term.wait_for(settled(pid), f"the count to reach {N:,} and the busiest-"
                                           f"threads panel to settle")
        alive_before = alive(pid, steady)
        term.keys("q")
        status = term.exit_status()
        final = term.screen(history=True)
        target_alive = alive(pid, steady)
        return {"pid": pid, "header": header, "live": live, "final": final,
                "status": status, "target_alive_before": alive_before,
                "target_alive": target_alive}
    finally:
        term.kill()
        end_leftovers(steady)


# -- 1. the live view in a terminal, and q ----------------------------------------------

def test_terminal_shows_exact_count_and_busiest_thread(quit_with_q):
    live, pid = quit_with_q["live"], quit_with_q["pid"]
    assert live.startswith("perfbp top  command '"), live
    header = live.split("\nwatch ", 1)[0]  # everything above the table
    assert re.search(r"\b1 watch, 1/4 slots\b.*\blost 0\b.*\bsort by watch\b", header,
                     re.S), live
    _, hits, row = watch_row(live, "counter")
    assert hits == N, row  # exactly: not one hit more or less
    assert "bump_counter+0x" in row  # the top writer
    assert re.search(r"^busiest threads\s+samples$", live, re.M), live
    # the main thread (tid == pid): every hit a sample, but those the machine
    # delivered without their status, which the summary counts apart
    assert thread_samples(live, "top_steady", pid) == N - recovered_in(quit_with_q["final"])
    assert "WARNING" not in live


def test_q_prints_the_record_summary_and_ends_the_target(quit_with_q):
    final = quit_with_q["final"]
    summary_lines(final, N)
    sampled = N - recovered_in(final)
    assert re.search(rf"^\s+{sampled:,} 100\.0%  top_steady/{quit_with_q['pid']}$", final,
                     re.M)
    assert "Traceback" not in final and "WARNING" not in final
    # the summary comes after the view, and the view is not redrawn after it
    assert final.rindex("perfbp top") < final.index("every hit accounted for")
    # perfbp ended the command it started (it was blocked on a FIFO nobody
    # opens, with a 60-s alarm: only perfbp could have ended it by now)
    assert quit_with_q["target_alive_before"]
    assert not quit_with_q["target_alive"]


def test_q_exits_0(quit_with_q):
    assert quit_with_q["status"] == 0


# -- 2. s switches the sort ------------------------------------------------------------

def test_s_sorts_by_hits(terminal, fifo, steady):
    term = terminal()
    _, pid = start_armed(term, "-w", "counter", "-w", "busier", "--interval", "0.5", "--",
                         str(steady), str(N_QUIET), str(N_BUSY), "0", str(fifo))
    def final(screen: str) -> bool:  # hits, not samples: a hit the machine
        try:                           # delivers without status has no sample
            return (watch_row(screen, "counter")[1], watch_row(screen, "busier")[1]) == (
                N_QUIET, N_BUSY)
        except AssertionError:
            return False

    before = term.wait_for(final, "both watches' final counts")
    assert "sort by watch" in before
    assert re.search(r"\b2 watches, 2/4 slots\b", before), before
    quiet, busy = watch_row(before, "counter"), watch_row(before, "busier")
    assert (quiet[1], busy[1]) == (N_QUIET, N_BUSY)
    assert quiet[0] < busy[0]  # in the order of the -w options
    assert "bump_counter+0x" in quiet[2] and "bump_busier+0x" in busy[2]
    term.keys("s")
    after = term.wait_for(lambda s: "sort by hits" in s, "'sort by hits' in the header")
    quiet, busy = watch_row(after, "counter"), watch_row(after, "busier")
    assert (quiet[1], busy[1]) == (N_QUIET, N_BUSY)
    assert busy[0] < quiet[0], after  # the busier watch first
    assert "sort by watch" not in after
    term.keys("q")
    term.exit_status()
    assert not alive(pid, steady)


def test_terminal_target_ends_by_itself(terminal, steady):
    """The target exits on its own: the view ends, the summary follows, and
    perfbp exits with the program's status.  The program printed nothing:
    the file its output would have gone to is removed, and the end says so."""
    term = terminal()
    header, pid = start_armed(term, "-w", "counter", "--interval", "0.5", "--",
                              str(steady), str(N), "0", str(EXIT_STATUS))
    assert term.exit_status() == EXIT_STATUS
    final = term.screen(history=True)
    summary_lines(final, N)
    assert "Traceback" not in final and "WARNING" not in final
    assert not alive(pid, steady)
    out = output_file(header)
    assert re.search(r"^perfbp: the command printed nothing$", final, re.M), final
    assert not os.path.exists(out)


# -- 2b. the first frame, long names, the command's output ---------------------------

def output_file(screen: str) -> str:
    """Where the view says the launched command's output goes."""
    m = re.search(r"^the command's output: (\S+)$", screen, re.M)
    assert m, screen
    return m.group(1)


def test_the_first_frame_comes_at_once_with_live_counts(terminal, fifo, steady):
    """--interval 30: the first frame does not wait for the first interval
    to end, and what it shows is live: the hits the program made before it
    (N_FIRST stores right after exec: a few milliseconds), one sparkline
    column for that first interval, the busiest thread."""
    term = terminal()
    first, pid = start_armed(term, "-w", "counter", "--interval", "30", "--",
                             str(steady), str(N_FIRST), "0", "0", str(fifo))
    elapsed = float(re.search(r"\b(\d+\.\d) s, lost", first).group(1))
    assert elapsed < 30, first  # not the end of the first interval
    _, hits, row = watch_row(first, "counter")
    assert hits > 0, first
    assert re.search(r"\blast 20×30s\b", first), first
    spark = re.match(r"^counter\s+[\d,]+\s+[\d,]+  (.{20})  bump_counter\+0x", row)
    assert spark and spark.group(1).strip() in "▁▂▃▄▅▆▇█" and spark.group(1)[-1] != " ", row
    assert thread_samples(first, "top_steady", pid) is not None, first
    term.keys("q")
    assert term.exit_status() == 0


LONG = ["_PyRuntime.ceval.gil.switch_number", "_PyRuntime.ceval.gil.locked"]


@pytest.mark.parametrize("width", [120, 72])
def test_long_names_whole_when_they_fit_else_cut_in_the_middle(terminal, fifo, steady, width):
    """120 columns: both names whole.  72: each cut in the middle, both
    members still shown, the two told apart (cut at the end they would both
    be ``_PyRuntime.ceval.gil.…``); the table within the width."""
    term = terminal(width)
    args = [a for name in LONG for a in ("-w", name)]
    screen, _pid = start_armed(term, *args, "-w", "counter", "--interval", "0.5", "--",
                               str(steady), str(N_FIRST), "0", "0", str(fifo))
    screen = term.wait_for(lambda s: "bump_counter" in s, "the top writer")
    rows = [line for line in screen.splitlines() if line.startswith("_")]
    assert len(rows) == 2, screen
    names = [row.split()[0] for row in rows]
    if width == 120:
        assert names == LONG, screen
    else:
        switch, locked = names
        assert switch != locked and "…" in switch and "…" in locked, screen
        assert switch.endswith("switch_number") and locked.endswith("locked"), screen
        assert switch.startswith("_PyRunti") and locked.startswith("_PyRunti"), screen
    assert all(len(line) <= width for line in screen.splitlines())
    assert [watch_row(screen, n)[1] for n in names] == [0, 0]
    term.keys("q")
    assert term.exit_status() == 0


TALK = ("for i in 1 2 3 4 5; do echo out-$((i * 11)); echo oops-$((i * 13)) >&2; "
        "sleep 0.1; done; exec")
TALKED = "".join(f"out-{i * 11}\noops-{i * 13}\n" for i in range(1, 6))


def test_a_commands_output_goes_to_a_file_not_over_the_view(terminal, steady, tmp_path):
    """A command that prints while the view is up: not a line of it on the
    terminal; the view names the file (--command-output), the end says
    where and how much, and the file holds it all, stdout and stderr."""
    out = tmp_path / "command.out"
    term = terminal()
    header, _pid = start_armed(term, "-w", "counter", "--interval", "0.2", "--command-output",
                               str(out), "--", "/bin/sh", "-c",
                               f"{TALK} {steady} {N} 0 {EXIT_STATUS}")
    assert output_file(header) == str(out)
    assert term.exit_status() == EXIT_STATUS
    final = term.screen(history=True)
    assert "out-11" not in final and "oops-13" not in final, final
    summary_lines(final, N)
    assert re.search(rf"^perfbp: the command's output \({len(TALKED)} bytes\) is in "
                     rf"{re.escape(str(out))}$", final, re.M), final
    assert out.read_text() == TALKED


def test_a_commands_output_goes_to_a_new_file_by_default(terminal, steady):
    term = terminal()
    header, _pid = start_armed(term, "-w", "counter", "--interval", "0.2", "--", "/bin/sh",
                               "-c", f"{TALK} {steady} {N} 0 {EXIT_STATUS}")
    out = Path(output_file(header))
    try:
        assert out.parent == Path(os.environ.get("TMPDIR", "/tmp"))
        assert out.name.startswith("perfbp-top-") and out.suffix == ".out"
        assert term.exit_status() == EXIT_STATUS
        final = term.screen(history=True)
        assert "out-11" not in final and "oops-13" not in final, final
        assert f"perfbp: the command's output ({len(TALKED)} bytes) is in {out}" in final
        assert out.read_text() == TALKED and out.stat().st_mode & 0o777 == 0o600
    finally:
        out.unlink(missing_ok=True)


# -- 3. not a terminal: plain lines ----------------------------------------------------

def run_piped(*args: str) -> subprocess.CompletedProcess:
    """``perfbp top ARGS`` to the end with stdout a pipe (stdin: /dev/null)."""
    deadline = time.monotonic() + SLOT_WAIT
    while True:
        r = subprocess.run([*PERFBP, "top", *args], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        if not no_free_slot(r.stderr) or time.monotonic() > deadline:
            return r
        time.sleep(0.5)


def plain_lines(stdout: str) -> "list[re.Match]":
    """The interval lines: every line up to the first blank one."""
    head = stdout.split("\n\n", 1)[0]
    lines = head.splitlines()
    matches = [PLAIN.match(line) for line in lines]
    assert lines and all(matches), stdout
    return matches


def test_piped_prints_plain_lines_then_the_summary(steady):
    r = run_piped("-w", "counter", "--interval", "0.2", "--", str(steady), str(N), "0",
                  str(EXIT_STATUS))
    assert r.returncode == EXIT_STATUS, r.stderr  # the program's own status
    assert "Traceback" not in r.stderr and r.stderr == "", r.stderr
    assert "\x1b" not in r.stdout  # no terminal codes in a pipe
    lines = plain_lines(r.stdout)
    assert {m.group(2) for m in lines} == {"counter"}  # one watch: one line an interval
    times = [float(m.group(1)) for m in lines]
    hits = [int(m.group(3)) for m in lines]
    assert times == sorted(times) and hits == sorted(hits)
    last = lines[-1]
    recovered = int(last.group(7) or 0)  # no sample: the machine lost their status
    assert (int(last.group(3)), int(last.group(5)) + recovered, int(last.group(6))) == (N, N, 0), \
        last.group(0)
    summary = r.stdout.split("\n\n", 1)[1]
    summary_lines(summary, N)
    assert f"samples {N - recovered:,}" in summary and "lost 0" in summary


def test_piped_two_watches_one_line_each_per_interval(steady):
    r = run_piped("-w", "counter", "-w", "busier", "--interval", "0.2", "--", str(steady),
                  str(N_QUIET), str(N_BUSY), "0")
    assert r.returncode == 0, r.stderr
    lines = plain_lines(r.stdout)
    labels = [m.group(2) for m in lines]
    assert labels == ["counter", "busier"] * (len(labels) // 2), r.stdout
    assert [int(m.group(3)) for m in lines[-2:]] == [N_QUIET, N_BUSY]
    assert f"kernel's hit count {N_BUSY:,}: every hit accounted for" in r.stdout


def test_piped_short_target_writers_are_named(steady):
    r = run_piped("-w", "counter", "--interval", "0.2", "--", str(steady), "7", "0", "0")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s+7 100\.0%  bump_counter\+0x[0-9a-f]+ ", r.stdout, re.M), r.stdout


def test_piped_on_every_cpu_while_a_command_runs(build):
    """-a -- CMD: every CPU, for as long as the command runs (fixed_writer
    stores N times at a page of its own, then exits with its status)."""
    import random

    writer = build("fixed_writer.c", "-O2", "-Wall", "-Wextra", "-Werror")
    a = 0x2000_0000_0000 + random.randrange(1 << 24) * 4096
    r = run_piped("-w", f"{a:#x}", "--interval", "0.2", "-a", "--", str(writer), f"{a:#x}",
                  str(N), str(EXIT_STATUS))
    assert r.returncode == EXIT_STATUS, r.stderr
    last = plain_lines(r.stdout)[-1]
    recovered = int(last.group(7) or 0)  # no sample: the machine lost their status
    assert (int(last.group(3)), int(last.group(5)) + recovered) == (N, N), last.group(0)
    assert re.search(rf"^\s+{N - recovered:,} 100\.0%  fixed_writer/\d+$", r.stdout, re.M), \
        r.stdout


def test_piped_command_output_goes_to_the_file_given(steady, tmp_path):
    """Piped, a command's output goes where perfbp's does, unless
    --command-output names a file; without a command to launch, it is
    refused."""
    out = tmp_path / "command.out"
    r = run_piped("-w", "counter", "--interval", "0.2", "--command-output", str(out), "--",
                  "/bin/sh", "-c", f"{TALK} {steady} 7 0 0")
    assert r.returncode == 0, r.stderr
    assert out.read_text() == TALKED
    assert "out-11" not in r.stdout and "oops-13" not in r.stderr
    assert r.stderr == f"perfbp: the command's output ({len(TALKED)} bytes) is in {out}\n"
    r = run_piped("-w", "counter", "--command-output", str(out), "-p", str(os.getpid()))
    assert (r.returncode, r.stderr) == (2, "perfbp: error: --command-output is where a "
                                           "launched command's output goes: give -- CMD\n")


def test_piped_rate_counts_the_intervals_real_length(steady):
    # the program's N stores take ~0.15 s: one short interval, ended by its exit
    r = run_piped("-w", "counter", "--interval", "2", "--", str(steady), str(N), "0", "0")
    assert r.returncode == 0, r.stderr
    lines = plain_lines(r.stdout)
    assert len(lines) == 1, r.stdout
    elapsed, hits, rate = float(lines[0].group(1)), int(lines[0].group(3)), int(lines[0].group(4))
    assert elapsed < 1.5 and hits == N
    assert rate >= 0.9 * hits / elapsed, lines[0].group(0)


# -- 4. Ctrl-C, piped ------------------------------------------------------------------

def interrupt_piped(steady: Path, hold: Path, *extra: str, wait: float = TIMEOUT) -> dict:
    """``perfbp top`` piped on top_steady (N stores, then it waits on
    ``hold``); once a line shows all N, SIGINT to perfbp alone, and up to
    ``wait`` seconds for it to end.  Returns its status and output, and
    whether the target outlived it."""
    deadline = time.monotonic() + SLOT_WAIT
    proc = None
    try:
        while True:
            proc = subprocess.Popen([*PERFBP, "top", "-w", "counter", "--interval", "0.2", "--",
                                     str(steady), str(N), "0", "0", str(hold), *extra],
                                    cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = proc.stdout.readline()  # one line an interval: never blocks for long
            if first:
                break
            err = proc.stderr.read()
            proc.wait(TIMEOUT)
            if not no_free_slot(err) or time.monotonic() > deadline:
                raise AssertionError(f"perfbp top did not start: {err}")
            time.sleep(0.5)
        seen = [first]
        def final(line: str) -> bool:  # every hit in, sampled or recovered
            m = PLAIN.match(line)
            return bool(m) and int(m.group(3)) == N == int(m.group(5)) + int(m.group(7) or 0)

        while not final(seen[-1]):
            line = proc.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        [target] = children(proc.pid)
        assert alive(target, steady)
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"perfbp still runs {wait} s after SIGINT (its target: "
                                 f"{'alive' if alive(target, steady) else 'gone'})") from None
        return {"status": proc.returncode, "stdout": "".join(seen) + out, "stderr": err,
                "target": target, "target_alive": alive(target, steady)}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        end_leftovers(steady)  # before reading on: the target holds perfbp's pipes
        if proc is not None:
            proc.communicate()


@pytest.fixture(scope="module")
def interrupted(steady, tmp_path_factory) -> dict:
    """One Ctrl-C run (see :func:`interrupt_piped`)."""
    hold = tmp_path_factory.mktemp("top-int") / "hold"
    os.mkfifo(hold)
    return interrupt_piped(steady, hold)


def test_ctrl_c_prints_the_summary_and_ends_the_target(interrupted):
    out = interrupted["stdout"]
    assert "Traceback" not in interrupted["stderr"], interrupted["stderr"]
    assert "perfbp: interrupted" not in interrupted["stderr"]  # a clean end, not an abort
    lines = plain_lines(out)
    assert int(lines[-1].group(3)) == N
    summary = out.split("\n\n", 1)[1]
    summary_lines(summary, N)
    n = N - recovered_in(summary)  # hits the machine delivered without their status: no sample
    assert re.search(rf"^\s+{n:,} 100\.0%  top_steady/{interrupted['target']}$", out, re.M)
    assert not interrupted["target_alive"]


def test_ctrl_c_exits_with_the_commands_status(interrupted):
    """As stat does (EXIT STATUS in docs/perfbp.md): perfbp ended the
    command (it waited on a FIFO nobody opens) with SIGTERM, passing the
    interruption on, and exits with its status; only q exits 0."""
    assert interrupted["status"] == SIGTERM_STATUS, interrupted["stderr"]


def test_ctrl_c_does_not_hang_on_a_target_that_ignores_sigterm(steady, fifo):
    res = interrupt_piped(steady, fifo, "noterm", wait=8)
    assert not res["target_alive"]
    summary_lines(res["stdout"].split("\n\n", 1)[1], N)


# -- 5. bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    ([], "no watch given"),
    (["-w", "no_such_global"], "no symbol 'no_such_global'"),
    (["-w", "counter", "--interval", "0.001"], "--interval 0.001 is too short"),
    (["-w", "counter"], "no target"),
], ids=["no-watch", "unknown-symbol", "interval-too-short", "no-target"])
def test_bad_input(steady, args, says):
    target = [] if says == "no target" else ["--", str(steady), "5", "0", "0"]
    r = run_piped(*args, *target)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("perfbp: error: "), r.stderr
    assert says in err[0]
    assert not running_copies(steady)  # a command launched to look names up is gone


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_bad_interval_not_a_number(steady, value):
    r = run_piped("-w", "counter", "--interval", value, "--", str(steady), "5", "0", "0")
    assert r.returncode == 2, (r.stdout, r.stderr)
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("perfbp: error: "), r.stderr
