"""``perfbp top``'s drawing, without a kernel: names shortened in the
middle and kept apart, one sparkline column per interval, the table within
the terminal's width (tests/test_top.py runs the view itself in a real
terminal)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from perfbp.cli import tui

GIL = ["_PyRuntime.ceval.gil.switch_number", "_PyRuntime.ceval.gil.locked"]


def test_the_issues_names_are_told_apart_at_every_width():
    """Cut at the end they would both read ``_PyRuntime.ceval.gil.…``: cut
    in the middle, each keeps its member."""
    for width in range(12, 34):
        switch, locked = tui.shorten(GIL, width)
        assert switch != locked
        assert len(switch) <= width and len(locked) <= width
        assert switch.endswith("number") and locked.endswith("locked"), (width, switch, locked)
        assert "…" in switch and switch[0] == locked[0] == "_"
        if width >= 15:  # both members whole, then as much of the start as fits
            assert switch.endswith("switch_number") and locked.endswith("gil.locked")
        if width >= 22:
            assert switch.startswith("_PyRunti") and locked.startswith("_PyRunti")


def test_names_that_fit_are_shown_whole():
    assert tui.shorten(GIL, 34) == GIL
    assert tui.shorten(GIL + ["counter"], 40) == GIL + ["counter"]
    assert tui.shorten(GIL, 30) == ["_PyRuntime.c…gil.switch_number", GIL[1]]


def test_a_cut_keeps_the_variables_own_name_when_it_can():
    assert tui.shorten(GIL, 22) == ["_PyRunti…switch_number", "_PyRunti…al.gil.locked"]
    assert tui.shorten([n + "@libpython3.11.so.1.0" for n in GIL], 30) == [
        "_PyRuntime.ceval.gil.switch….0", "_PyRuntime.ceval.gil.locked….0"]


def test_names_that_differ_deep_in_the_middle_show_where():
    """No single cut of 16 characters reaches the members (the object's name
    is 21 characters): each shows the part where they differ."""
    switch, locked = tui.shorten([n + "@libpython3.11.so.1.0" for n in GIL], 16)
    assert (switch, locked) == ("…gil.switch_num…", "…gil.locked@lib…")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.text(alphabet="ab._@[]0", min_size=1, max_size=60), min_size=1,
                max_size=6), st.integers(8, 40))
def test_shortened_names_fit_and_stay_apart(labels, width):
    shown = tui.shorten(labels, width)
    assert len(set(shown)) == len(set(labels)), (labels, width, shown)
    for label, s in zip(labels, shown):
        assert len(s) <= width
        assert s == label if len(label) <= width else "…" in s


def test_the_sparkline_has_one_column_per_interval():
    """Newest at the right; an interval not yet seen, or without hits, is a
    blank column; any hit shows."""
    assert tui.sparkline([]) == " " * tui.SPARK_WIDTH
    assert tui.sparkline([7.0]) == " " * (tui.SPARK_WIDTH - 1) + "█"
    assert tui.sparkline([0, 1, 800, 400], 6) == "   ▁█▄"
    assert tui.sparkline(range(1, 100), 8) == "▇███████"  # the last 8: 92..99
    for n in range(0, 70):
        assert len(tui.sparkline([5.0] * n)) == tui.SPARK_WIDTH


def test_the_columns_share_the_width():
    """Names whole when the terminal is wide enough; else the sparkline
    gives up intervals, then the writer columns, and the names never get
    fewer than MIN_LABEL columns."""
    writers = ["bump_counter+0x12"]  # 17
    # hits and hits/s take 12, the gaps 8, 20 intervals 20: 40 besides names and writer
    assert tui.layout(120, GIL, writers, 12, 1.0) == (34, 17, 20)
    assert tui.layout(91, GIL, writers, 12, 1.0) == (34, 17, 20)
    assert tui.layout(90, GIL, writers, 12, 1.0) == (34, 17, 19)
    assert tui.layout(80, GIL, writers, 12, 1.0) == (34, tui.MIN_WRITER, tui.MIN_SPARK)
    assert tui.layout(72, GIL, writers, 12, 0.5) == (24, tui.MIN_WRITER, tui.MIN_SPARK)
    assert tui.layout(50, GIL, writers, 12, 1.0) == (tui.MIN_LABEL, 8, tui.MIN_SPARK)
    assert tui.spark_title(tui.MIN_SPARK, 0.5) == "last 10×0.5s"
