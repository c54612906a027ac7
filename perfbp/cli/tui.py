"""``perfbp top``: the live terminal view, drawn with rich.

Only the public API is used (:class:`perfbp.LiveSession`).  On a terminal
the first frame comes ``FIRST_FRAME`` seconds after the target starts, with
the counts of that moment, then one every interval: a header (target,
watches, slots, elapsed time, lost samples, where a launched command's
output goes, a warning for a watch that can never fire or when samples +
lost differ from the kernel's count), one row per watch (hits, hits per
second, a sparkline with one column per interval, the top writer), and the
busiest threads; ``q`` quits, ``s`` switches the sort (watch, hits, rate).
Names too long for the terminal are shortened in the middle, and kept
distinct.  Elsewhere (a pipe, a file): one plain line per watch per
interval.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

# loaded with the module, before the session arms: the first frame is not kept
# waiting for them (piped output never draws, and pays ~0.1 s for them)
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

import perfbp

SPARKS = " ▁▂▃▄▅▆▇█"
SORTS = ("watch", "hits", "rate")
FIRST_FRAME = 0.1  # seconds from the start to the first frame on a terminal
SPARK_WIDTH = 20   # intervals in the sparkline, one column each
MIN_SPARK = 10     # ... down to this many on a narrow terminal
MIN_LABEL = 12     # the narrowest watch column, however narrow the terminal
MIN_WRITER = 16    # the writer column gives way to the names down to this
GAP = 2            # columns between two columns of the table


def is_terminal() -> bool:
    """Whether top draws the live view (stdout and stdin a terminal) rather
    than printing plain lines."""
    return sys.stdout.isatty() and sys.stdin.isatty()


def sparkline(values, width: int = SPARK_WIDTH) -> str:
    """The last ``width`` values, one column each, newest at the right,
    scaled to the largest; a column is blank for a zero and for an interval
    not yet seen, and any nonzero value shows."""
    vals = list(values)[-width:]
    top = max(vals, default=0) or 1
    steps = len(SPARKS) - 1
    bars = "".join(SPARKS[0 if v <= 0 else max(1, min(steps, round(v / top * steps)))]
                   for v in vals)
    return bars.rjust(width)


def shorten(labels: "Sequence[str]", width: int) -> "list[str]":
    """Each label longer than ``width`` cut in the middle to ``width``
    characters (its start and its end, joined by ``…``), the labels told
    apart as they were (widths from 8 up).

    Of the cuts that keep them apart, the one taken shows whole what tells
    the most long labels apart (what lies between their common start and
    common end: ``switch_number`` and ``locked`` in
    ``_PyRuntime.ceval.gil.switch_number`` and ``…gil.locked``); then one
    that shows each variable's own name whole (``_PyRuntime``); then the one
    that keeps nearest 60% of the room for the end (a member, an offset);
    then the one that shows the most of what tells them apart.  When no cut
    shows any of that, each label shows the part around where it begins,
    between two ``…``.
    """
    room = max(width, 3) - 1
    long = [i for i, s in enumerate(labels) if len(s) > room + 1]
    if not long:
        return list(labels)
    distinct = len(set(labels))
    group = [labels[i] for i in long]
    head = len(os.path.commonprefix(group)) if len(group) > 1 else 0
    foot = len(os.path.commonprefix([s[::-1] for s in group])) if len(group) > 1 else 0
    prefer = round(room * 0.6)
    best, best_key = None, None
    for tail in range(1, room):
        shown = [f"{s[:room - tail]}…{s[-tail:]}" if i in long else s
                 for i, s in enumerate(labels)]
        if len(set(shown)) != distinct:
            continue
        seen = [_overlap(head, len(s) - foot, 0, room - tail)
                + _overlap(head, len(s) - foot, len(s) - tail, len(s)) for s in group]
        whole = sum(n == len(s) - foot - head for n, s in zip(seen, group))
        named = all(room - tail >= len(_root(s)) for s in group)
        key = (whole, named, -abs(tail - prefer), sum(seen), tail)
        if best_key is None or key > best_key:
            best, best_key = shown, key
    if best is not None and (best_key[3] > 0 or len(group) == 1):
        return best
    shown = list(labels)
    start = max(0, head - (room - 1) // 3)  # where they differ, a little before it
    for i in long:
        s = labels[i]
        at = min(start, len(s) - (room - 1))
        shown[i] = f"…{s[at:at + room - 1]}…" if at > 0 else f"{s[:room]}…"
    return shown


def _root(label: str) -> str:
    """The variable's own name in a watch's label (``_PyRuntime`` in
    ``_PyRuntime.ceval.gil.locked@libpython3.11.so.1.0``)."""
    for k, ch in enumerate(label):
        if ch in ".[@+/:":
            return label[:k]
    return label


def _overlap(lo: int, hi: int, a: int, b: int) -> int:
    """How much of [lo, hi) lies in [a, b)."""
    return max(0, min(hi, b) - max(lo, a))


def _order(session: "perfbp.LiveSession", sort: str) -> "list[int]":
    idx = list(range(len(session.figures)))
    if sort == "hits":
        idx.sort(key=lambda i: -session.figures[i].hits)
    elif sort == "rate":
        idx.sort(key=lambda i: -session.figures[i].rate)
    return idx


def spark_title(columns: int, interval: float) -> str:
    """The sparkline's column title: how many intervals, how long each."""
    return f"last {columns}×{interval:g}s"


def layout(width: int, labels: "list[str]", writers: "list[str]", numbers: int,
           interval: float) -> "tuple[int, int, int]":
    """``(watch, writer, sparkline)`` column widths for a terminal ``width``
    wide, the hits and rate columns taking ``numbers``.  The names whole
    when they fit; else the sparkline gives up intervals (down to
    ``MIN_SPARK``), then the writer column (down to ``MIN_WRITER``),
    and the names get the rest: at least ``MIN_LABEL``, the writer what is
    left then."""
    label = max(map(len, labels + ["watch"]))
    writer = max(map(len, writers + ["top writer"]))

    def room(spark: int) -> int:
        return width - numbers - 4 * GAP - max(spark, len(spark_title(spark, interval)))

    spark = SPARK_WIDTH
    while label + writer > room(spark) and spark > MIN_SPARK:
        spark -= 1
    left = room(spark)
    if label + writer <= left:
        return label, writer, spark
    writer = min(writer, max(left - label, MIN_WRITER))
    label = max(MIN_LABEL, min(label, left - writer))
    return label, max(0, min(writer, left - label)), spark


def render(session: "perfbp.LiveSession", sort: str, slots: int, capacity: int,
           width: int = 80):
    """The screen, as rich renderables, for a terminal ``width`` columns wide."""
    figs = session.figures
    lost = sum(f.lost for f in figs)
    head = Text()
    head.append("perfbp top", style="bold")
    head.append(f"  {session.description}\n")
    n = len(figs)
    head.append(f"{n} watch{'es' if n != 1 else ''}, {slots}/{capacity} slots, "
                f"{session.elapsed:.1f} s, lost {lost:,}, sort by {sort} (s: sort, q: quit)")
    if session.command_output is not None:
        head.append(f"\nthe command's output: {session.command_output}")
    warn = Text()
    for w in session.watches:
        if w.warning:
            warn.append(f"\nWARNING: {w.warning}", style="bold red")
    bad = [f.label for f in figs if not f.complete]
    if bad and session.ended_by is not None:
        warn.append(f"\nWARNING: samples + lost != hits for {', '.join(bad)}", style="bold red")
    order = _order(session, sort)
    rows = []
    for i in order:
        f = figs[i]
        top = session.top_writers(i, 1)
        hits = f"{f.hits:,}" if f.estimate is None else \
            f"~{f.estimate:,} ({100 * f.coverage:.0f}%)"
        if f.matched is not None:  # a condition: the hits it let through, too
            hits += f" / {f.matched:,}"
        rows.append([f.label, hits, f"{f.rate:,.0f}", "", top[0] if top else ""])
    numbers = (max(len(r[1]) for r in rows + [["", "hits"]])
               + max(len(r[2]) for r in rows + [["", "", "hits/s"]]))
    label_w, writer_w, spark = layout(width, [r[0] for r in rows], [r[4] for r in rows],
                                      numbers, session.interval)
    for i, r, label in zip(order, rows, shorten([r[0] for r in rows], label_w)):
        r[0] = label
        r[3] = sparkline(figs[i].history, spark)
        r[4] = shorten([r[4]], writer_w)[0] if writer_w >= 3 else ""
    table = Table(box=None, pad_edge=False, expand=False, padding=(0, GAP // 2))
    table.add_column("watch", no_wrap=True, width=label_w)
    tested = any(f.matched is not None for f in figs)
    table.add_column("hits / matched" if tested else "hits", justify="right", no_wrap=True)
    table.add_column("hits/s", justify="right", no_wrap=True)
    table.add_column(spark_title(spark, session.interval), no_wrap=True)
    table.add_column("top writer", no_wrap=True, width=writer_w)
    for r in rows:
        table.add_row(*r)
    threads = Table(box=None, pad_edge=False, title=None)
    threads.add_column("busiest threads", no_wrap=True)
    threads.add_column("samples", justify="right")
    for t in session.threads(5):
        threads.add_row(f"{t.comm}/{t.tid}", f"{t.samples:,}")
    return Group(head, warn, Text(""), table, Text(""), threads)


def plain_lines(session: "perfbp.LiveSession") -> "list[str]":
    """One line per watch for this interval (not a terminal)."""
    out = []
    for f in session.figures:
        line = (f"{session.elapsed:10.3f} {f.label} hits={f.hits} rate={f.rate:.0f}/s "
                f"samples={f.samples} lost={f.lost}")
        if f.matched is not None:  # a condition: the hits it let through
            line += f" matched={f.matched}"
        if f.recovered:  # hits without a sample: the machine lost their status
            line += f" recovered={f.recovered}"
        if f.estimate is not None:
            line += f" estimate={f.estimate} coverage={f.coverage:.3f}"
        out.append(line)
    return out


def output_file() -> str:
    """A new file (mode 0600) in ``$TMPDIR`` for a launched command's output
    while the live view has the terminal."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="perfbp-top-", suffix=".out")
    os.close(fd)
    return path


def output_note(path: str, made: bool) -> str:
    """Where the command's output went, for the end of the run; an empty
    file perfbp made (``made``) is removed."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return f"the command's output was to go to {path}, which is gone"
    if size == 0 and made:
        os.unlink(path)
        return "the command printed nothing"
    return f"the command's output ({size:,} bytes) is in {path}"


def run(session: "perfbp.LiveSession", *, interval: float, slots: int, capacity: int,
        interactive: "bool | None" = None) -> bool:
    """Drive the session until the target ends, ``q``, Ctrl-C or SIGTERM;
    whether the user quit with ``q``."""
    import signal

    tty = is_terminal() if interactive is None else interactive
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        session.start(first=FIRST_FRAME if tty else None)
        if not tty:
            for w in session.watches:  # on a terminal, the view's header says it
                if w.warning:
                    print(f"perfbp: WARNING: {w.warning}", file=sys.stderr, flush=True)
            while session.ended_by is None and not stop["flag"]:
                session.poll()
                for line in plain_lines(session):
                    print(line, flush=True)
            return False
        return _run_tty(session, slots, capacity, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_tty(session, slots: int, capacity: int, stop: dict) -> bool:
    """The live view: the first frame once the session has its first figures
    (``FIRST_FRAME``), then one every interval and after every key."""
    import termios
    import tty as ttymod

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    ttymod.setcbreak(fd)
    sort = 0
    console = Console()
    try:
        with Live(Text(""), console=console, auto_refresh=False, screen=False) as live:
            while session.ended_by is None and not stop["flag"]:
                ready = session.poll(extra_fds=[fd])
                if ready:
                    key = os.read(fd, 16).decode(errors="replace")
                    if "q" in key:
                        return True
                    if "s" in key:
                        sort = (sort + 1) % len(SORTS)
                if not session.updates:  # a key before the first figures: no frame of zeros
                    continue
                live.update(render(session, SORTS[sort], slots, capacity, console.width),
                            refresh=True)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return False
