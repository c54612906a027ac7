"""What every benchmark in this folder shares: the command line's common
options, which perfbp is measured, the warning for a busy machine, and the
output (one JSON object, or the script's own table).

The common options (every script has them, described once in
benchmarks/README.md):

``--json``
    print one JSON object instead of the table;
``--perfbp DIR``
    measure the perfbp package found in DIR (a directory holding
    ``perfbp/``) instead of this checkout's: run the same script once per
    tree for before/after figures of a patch.

A script that imports perfbp itself calls :func:`use_perfbp` (DIR first on
``sys.path``); one that runs ``python3 -m perfbp`` in children gives them
:func:`child_env` (DIR first on ``PYTHONPATH``) and a working directory that
is not another checkout (``python -m`` puts its cwd ahead of PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: the checkout this folder belongs to: the default ``--perfbp DIR``
ROOT = Path(__file__).resolve().parent.parent
#: a load average above this at the start makes the figures noisy
BUSY_LOAD = 1.0


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (the
    script's docstring), with the common options in a group of their own.

    The script adds its own options to what this returns."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common = ap.add_argument_group("common options (benchmarks/README.md)")
    common.add_argument("--perfbp", metavar="DIR", default=str(ROOT),
                        help="directory holding the perfbp package to benchmark "
                             "(default: this checkout)")
    common.add_argument("--json", action="store_true", help="print one JSON object")
    return ap


def parse_args(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``ap.parse_args(argv)``, with ``args.perfbp`` made absolute and checked
    to hold a perfbp package (else the usage error, exit status 2)."""
    args = ap.parse_args(argv)
    try:
        args.perfbp = perfbp_dir(args.perfbp)
    except RuntimeError as exc:
        ap.error(str(exc))
    return args


def perfbp_dir(path: "str | Path") -> str:
    """``path`` made absolute, once it is checked to hold a perfbp package.

    Raises:
        RuntimeError: no ``perfbp/__init__.py`` in it.
    """
    pdir = str(Path(path).resolve())
    if not (Path(pdir) / "perfbp" / "__init__.py").exists():
        raise RuntimeError(f"no perfbp package in {pdir}")
    return pdir


def use_perfbp(path: "str | Path") -> None:
    """Put the directory holding the perfbp package first on ``sys.path``
    (before this process imports perfbp)."""
    path = str(Path(path).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def child_env(pdir: str, keep_pythonpath: bool = True) -> dict:
    """This process's environment with ``pdir`` first on PYTHONPATH (the
    rest of PYTHONPATH after it, unless ``keep_pythonpath`` is false)."""
    env = dict(os.environ)
    rest = env.get("PYTHONPATH") if keep_pythonpath else None
    env["PYTHONPATH"] = pdir + (os.pathsep + rest if rest else "")
    return env


def find_perf() -> "tuple[str, str]":
    """perf's path and its ``--version`` line.

    Raises:
        RuntimeError: perf is not on PATH.
    """
    perf = shutil.which("perf")
    if perf is None:
        raise RuntimeError("perf is not on PATH (Debian: apt-get install linux-perf)")
    version = subprocess.run([perf, "--version"], capture_output=True, text=True).stdout
    return perf, version.strip()


def compile_c(workdir: str, name: str, source: str, *flags: str) -> str:
    """Write ``source`` to ``workdir/name.c`` and compile it with gcc (or cc)
    and ``flags``; return the program's path.

    Raises:
        RuntimeError: no C compiler, or it failed (its messages attached).
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (gcc) on PATH")
    src, exe = os.path.join(workdir, f"{name}.c"), os.path.join(workdir, name)
    with open(src, "w") as f:
        f.write(source)
    proc = subprocess.run([cc, *flags, "-o", exe, src], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc failed: {proc.stderr.strip()}")
    return exe


def symbol_address(exe: str, symbol: str = "counter") -> int:
    """The address of ``symbol`` in the program (from ``nm``; link it with
    ``-no-pie`` for the address it runs at).

    Raises:
        RuntimeError: no nm, or no such symbol.
    """
    nm = shutil.which("nm")
    if nm is None:
        raise RuntimeError("no nm on PATH (binutils)")
    out = subprocess.run([nm, exe], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if parts[-1:] == [symbol]:
            return int(parts[0], 16)
    raise RuntimeError(f"cannot find `{symbol}` in the program's symbols")


def machine() -> dict:
    """The ``machine``, ``kernel`` and ``python`` fields of every result."""
    uname = os.uname()
    return {"machine": uname.machine, "kernel": uname.release,
            "python": sys.version.split()[0]}


def load_average() -> float:
    """The one-minute load average (taken before and after a run)."""
    return os.getloadavg()[0]


def busy_warning(load_before: float, also: str = "") -> "str | None":
    """The warning for a machine that was busy before the run, or None.

    ``also`` ends the sentence with what else the load means to this
    benchmark."""
    if load_before <= BUSY_LOAD:
        return None
    return (f"the machine was busy before the run (load average {load_before:.2f}): "
            f"the figures are noisy" + (f", {also}" if also else ""))


def finish(result: dict, as_json: bool, print_table, warnings=()) -> int:
    """Print the result (one JSON object, or ``print_table(result)``) and
    return the exit status, 0.

    ``warnings`` that are not None are joined into ``result["warning"]``,
    which every table prints as a ``WARNING:`` line."""
    said = [w for w in warnings if w]
    if said:
        result["warning"] = "; ".join(said)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


def print_header(hdr: str, indent: str = "") -> None:
    """A table's header line and the rule under it."""
    print(indent + hdr)
    print(indent + "-" * len(hdr))


def rounds_option(ap: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--rounds R`` / ``-r R``: how many times each thing is timed; ``what``
    says what a round is and which figure is kept."""
    ap.add_argument("--rounds", "-r", type=int, default=default,
                    help=f"{what} (default {default})")


def print_warning(result: dict) -> None:
    """The ``WARNING:`` line of a table, when the result has a warning."""
    if result.get("warning"):
        print(f"WARNING: {result['warning']}")


def print_ratios(head: str, rows: "list[dict]", width: int, digits: int,
                 sides: "tuple[tuple[str, str, str], ...]" = ()) -> None:
    """A blank line, then a table of ratios against their goals: each row's
    ``label``, ``ratio`` (to ``digits`` decimals; None: ``-``), ``goal``
    (None: none) and ``status``; the first column ``width`` wide.  Each of
    ``sides``, ``(key, title, format)``, is a column before the ratio: the
    row's value for ``key`` (None: ``-``) in that format (``"8.3f"``)."""
    print()
    print_header(f"{head:{width}}" + "".join(f" {title:>{int(fmt.split('.')[0])}}"
                                            for _k, title, fmt in sides)
                 + f" {'ratio':>8} {'goal':>8}  status")
    for row in rows:
        goal = f"<={row['goal']:g}" if row.get("goal") else "-"
        values = "".join(f" {'-':>{int(fmt.split('.')[0])}}" if row.get(key) is None
                         else f" {row[key]:{fmt}}" for key, _t, fmt in sides)
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:7.{digits}f}x"
        print(f"{row['label']:{width}}{values} {ratio:>8} {goal:>8}  {row['status']}")
