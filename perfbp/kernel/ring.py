"""The perf ring-buffer protocol, over any mapping that provides the head and
tail accessors.

libperf's four steps — read_init, read_event, consume, read_done — are folded
into one :meth:`Ring.read` that copies everything between ``data_tail`` and
``data_head`` out of the ring in one or two slices (two when the region wraps
the end of the buffer; a record that wraps is thus made whole in the copy, the
"spare buffer" of libperf), then stores the new tail.  The kernel publishes
``data_head`` only after complete records, so the copy always holds whole
records; decoding happens outside the ring, on the copy, at bulk speed.

Ordering (acquire on the head, release on the tail) is the mapping's job: see
:class:`perfbp.kernel.abi.RingMapping`.  This module is pure Python so that the
protocol can be tested on a plain bytearray that plays the kernel.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import RingOverrun


class Mapping(Protocol):
    data: memoryview
    data_size: int

    def load_head(self) -> int: ...
    def store_tail(self, value: int) -> None: ...
    def load_tail(self) -> int: ...


class Ring:
    """Reader of one perf ring.

    Attributes:
        mapping: the mapping (head/tail accessors and the data view).
        bytes_read: total bytes consumed, for statistics.
    """

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.size = mapping.data_size
        self.mask = self.size - 1
        self.tail = mapping.load_tail()
        self.bytes_read = 0

    def pending(self) -> int:
        """Bytes the kernel has published and not yet been read."""
        return self.mapping.load_head() - self.tail

    def read(self) -> bytes:
        """Copy out every published record and release their space.

        Returns:
            The bytes of zero or more whole records, in order.

        Raises:
            RingOverrun: the head is more than one buffer ahead of the tail.
        """
        head = self.mapping.load_head()  # acquire
        tail = self.tail
        n = head - tail
        if n <= 0:
            return b""
        if n > self.size:
            raise RingOverrun(f"ring head {head} is {n} bytes past tail {tail}, more "
                              f"than the {self.size}-byte buffer: records were overwritten")
        start = tail & self.mask
        data = self.mapping.data
        if start + n <= self.size:
            chunk = bytes(data[start:start + n])
        else:
            first = self.size - start
            chunk = bytes(data[start:]) + bytes(data[:n - first])
        self.tail = head
        self.mapping.store_tail(head)  # release: the kernel may reuse the space
        self.bytes_read += n
        return chunk
