"""A plain in-memory model of files, to check a cluster's answers against.

Promise: ``FileModel`` holds what POSIX says a file holds after a sequence
of writes and truncates: the bytes and the size, holes read as zeros. It
knows nothing of chunks, replicas or leases, so a difference between it
and the cluster is the cluster's bug (or the model's: it is kept small
enough to be obviously right).
"""

from __future__ import annotations


class FileModel:
    """One file's bytes and size."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def write(self, offset: int, payload: bytes) -> None:
        assert offset >= 0
        end = offset + len(payload)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = payload

    def truncate(self, size_bytes: int) -> None:
        assert size_bytes >= 0
        if size_bytes < len(self.data):
            del self.data[size_bytes:]
        else:
            self.data.extend(bytes(size_bytes - len(self.data)))

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset:offset + length])


def first_difference(expected: bytes, actual: bytes) -> str:
    """Where two byte strings part, for an assertion message."""
    if len(expected) != len(actual):
        prefix = f"length {len(actual)}, expected {len(expected)}; "
    else:
        prefix = ""
    for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
        if want != got:
            return f"{prefix}first difference at byte {index}: {got:#04x}, expected {want:#04x}"
    return prefix + "the shorter is a prefix of the longer"
