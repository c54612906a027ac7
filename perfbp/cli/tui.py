"""``perfbp top``: the live terminal view, drawn with rich.

Only the public API is used (:class:`perfbp.LiveSession`).  On a terminal:
a header (target, watches, slots, elapsed time, lost samples, and a warning
when samples + lost differ from the kernel's count), one row per watch
(hits, hits per second, a sparkline of the last 60 intervals, top writers),
and the busiest threads; ``q`` quits, ``s`` switches the sort (watch, hits,
rate).  Elsewhere (a pipe, a file): one plain line per watch per interval.
"""

from __future__ import annotations

import os
import sys

import perfbp

SPARKS = " ▁▂▃▄▅▆▇█"
SORTS = ("watch", "hits", "rate")


def sparkline(values, width: int = 30) -> str:
    vals = list(values)[-width:]
    if not vals:
        return ""
    top = max(vals) or 1
    return "".join(SPARKS[min(len(SPARKS) - 1, round(v / top * (len(SPARKS) - 1)))] for v in vals)


def _order(session: "perfbp.LiveSession", sort: str) -> "list[int]":
    idx = list(range(len(session.figures)))
    if sort == "hits":
        idx.sort(key=lambda i: -session.figures[i].hits)
    elif sort == "rate":
        idx.sort(key=lambda i: -session.figures[i].rate)
    return idx


def render(session: "perfbp.LiveSession", sort: str, slots: int, capacity: int):
    """The screen, as rich renderables."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    figs = session.figures
    lost = sum(f.lost for f in figs)
    head = Text()
    head.append("perfbp top", style="bold")
    head.append(f"  {session.description}\n")
    n = len(figs)
    head.append(f"{n} watch{'es' if n != 1 else ''}, {slots}/{capacity} slots, "
                f"{session.elapsed:.1f} s, lost {lost:,}, sort by {sort} (s: sort, q: quit)")
    bad = [f.label for f in figs if f.samples + f.lost != f.hits]
    warn = Text()
    if bad and session.ended_by is not None:
        warn.append(f"\nWARNING: samples + lost != hits for {', '.join(bad)}", style="bold red")
    table = Table(box=None, pad_edge=False, expand=False)
    table.add_column("watch", no_wrap=True, max_width=22)
    table.add_column("hits", justify="right")
    table.add_column("hits/s", justify="right")
    table.add_column("last 60 s", no_wrap=True)
    table.add_column("top writer", no_wrap=True, max_width=26)
    for i in _order(session, sort):
        f = figs[i]
        writers = session.writers(i, 1)
        top = str(writers[0].location) if writers else ""
        hits = f"{f.hits:,}" if f.estimate is None else \
            f"~{f.estimate:,} ({100 * f.coverage:.0f}%)"
        table.add_row(f.label, hits, f"{f.rate:,.0f}", sparkline(f.history, 20), top)
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
        if f.recovered:  # hits without a sample: the machine lost their status
            line += f" recovered={f.recovered}"
        if f.estimate is not None:
            line += f" estimate={f.estimate} coverage={f.coverage:.3f}"
        out.append(line)
    return out


def run(session: "perfbp.LiveSession", *, interval: float, slots: int, capacity: int,
        interactive: "bool | None" = None) -> bool:
    """Drive the session until the target ends, ``q``, Ctrl-C or SIGTERM;
    whether the user quit with ``q``."""
    import signal

    tty = sys.stdout.isatty() and sys.stdin.isatty() if interactive is None else interactive
    stop = {"flag": False}

    def on_signal(signum, frame):
        stop["flag"] = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        session.start()
        if not tty:
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
    import termios
    import tty as ttymod

    from rich.console import Console
    from rich.live import Live

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    ttymod.setcbreak(fd)
    sort = 0
    console = Console()
    try:
        with Live(render(session, SORTS[sort], slots, capacity), console=console,
                  auto_refresh=False, screen=False) as live:
            while session.ended_by is None and not stop["flag"]:
                ready = session.poll(extra_fds=[fd])
                if ready:
                    key = os.read(fd, 16).decode(errors="replace")
                    if "q" in key:
                        return True
                    if "s" in key:
                        sort = (sort + 1) % len(SORTS)
                live.update(render(session, SORTS[sort], slots, capacity), refresh=True)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return False
