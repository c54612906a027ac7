"""A recording's samples as columns, and as data frames.

:func:`load_samples` reads a perf.data file (perfbp's or perf's) into a
:class:`Samples`: numpy columns (``ip``, ``pid``, ``tid``, ``time``, ``cpu``,
``addr``) plus the watch of every sample.  ``to_pandas()`` and
``to_polars()`` convert when those packages are installed (the extras
``perfbp[pandas]`` / ``perfbp[polars]``); without them, the columns are plain
numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

from .perfdata import FileAttr, read_recording
from ..kernel.records import COLUMNS, decode_bulk, shape_repr


@dataclass
class Samples:
    """Samples as columns.

    Attributes:
        columns: name -> numpy array, all of one length.
        watches: the watch names; ``columns["watch"]`` indexes them.
    """

    columns: dict
    watches: "list[str]"

    def __len__(self) -> int:
        return len(self.columns.get("watch", ()))

    def to_pandas(self):
        """A ``pandas.DataFrame`` (``watch`` as a categorical of the names).

        Raises:
            ImportError: pandas is not installed (``pip install perfbp[pandas]``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas() needs pandas: pip install 'perfbp[pandas]'") from None
        cols = dict(self.columns)
        cols["watch"] = pd.Categorical.from_codes(cols["watch"], categories=self.watches)
        return pd.DataFrame(cols)

    def to_polars(self):
        """A ``polars.DataFrame``.

        Raises:
            ImportError: polars is not installed (``pip install perfbp[polars]``).
        """
        try:
            import polars as pl
        except ImportError:
            raise ImportError("to_polars() needs polars: pip install 'perfbp[polars]'") from None
        cols = dict(self.columns)
        names = [self.watches[i] for i in cols.pop("watch").tolist()]
        frame = pl.DataFrame(cols)
        return frame.with_columns(pl.Series("watch", names, dtype=pl.Categorical))

    def __repr__(self) -> str:
        shown = ", ".join(self.watches[:4]) + (", ..." if len(self.watches) > 4 else "")
        n = len(self.watches)
        return shape_repr("Samples", len(self), list(self.columns),
                          f", of {n} watch{'es' if n != 1 else ''} ({shown})")


def load_samples(path: str) -> Samples:
    """Every sample of a recording, as columns.

    ``addr`` is the watched address each sample hit (its breakpoint's
    ``bp_addr``: a breakpoint's sample never holds the address accessed),
    whether or not the samples carry it.

    Raises:
        CorruptRecording / PerfbpError: the file is not a readable recording.
    """
    import numpy as np

    rec = read_recording(path)
    cols, _others = decode_bulk(rec.data, rec.config)
    # only breakpoint events are watches (not the dummy:u event that carries
    # thread and mapping records, nor perf's others)
    names = [(ev.name or f"event {i}") if ev.is_breakpoint else None
             for i, ev in enumerate(rec.events)]
    order = list(dict.fromkeys(nm for nm in names if nm is not None))
    event_watch = [order.index(nm) if nm is not None else -1 for nm in names]
    id_map = {i: event_watch[e] for i, e in rec.id_to_event().items()}
    n = len(cols)
    # a breakpoint's sample carries (as ADDR, when asked) its event's bp_addr:
    # without ADDR, it is the attr's (the event never moved: see Sampler)
    event_addr = [FileAttr.decode(ev.attr).bp_addr if ev.is_breakpoint else 0
                  for ev in rec.events]
    if n and cols.id is not None and id_map:
        keys = np.array(sorted(id_map), dtype=np.uint64)
        pos = np.minimum(np.searchsorted(keys, cols.id), len(keys) - 1)
        found = keys[pos] == cols.id
        vals = np.array([id_map[int(k)] for k in keys], dtype=np.int64)
        watch = np.where(found, vals[pos], 0)
        if cols.addr is None:
            by_id = rec.id_to_event()
            addrs = np.array([event_addr[by_id[int(k)]] for k in keys], dtype=np.uint64)
            cols.addr = np.where(found, addrs[pos], np.uint64(0))
    else:
        watch = np.zeros(n, dtype=np.int64)
        if cols.addr is None:  # samples without ids: one breakpoint event
            first = next((a for a, ev in zip(event_addr, rec.events) if ev.is_breakpoint), 0)
            cols.addr = np.full(n, first, dtype=np.uint64)
    out = {"watch": watch.astype(np.int64)}
    for name in COLUMNS:
        col = getattr(cols, name)
        if col is not None and name not in ("id", "stream_id", "period"):
            out[name] = col
    return Samples(out, order)
