"""Recordings: perf.data files and streams, and the reports and columns made from them."""
