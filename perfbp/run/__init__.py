"""Running watch sessions: one lifecycle, following a launched command, counting, recording, live views, watches on this process, multiplexing, the self-check."""
