"""fsx on a real mount: seeded random operations checked against a model of the file.

One file, one process: writes (random bytes, and zeros, which the mount
stores as holes), truncates down and up, fsync and fdatasync, close and
reopen, reads; after every step the size (fstat) and the bytes the step
touched are compared with an in-memory model, and the whole file now and
then and after every reopen. A few times per run the test also waits for the
kernel's cached attributes to expire after a close, so that a size the
master got wrong (issue 18: a truncate undone by a stale size) shows.

Phases: buffered I/O at the start of the file; buffered I/O across the
first chunk boundary (a sparse file, so the model keeps only the bytes from
``base`` on); O_DIRECT with aligned offsets, lengths and buffers, as QEMU
``cache=none`` does.

On failure the seed and the last operations are in the error. To replay or
soak: ``VMSTORE_FSX_SEED=<seed> VMSTORE_FSX_OPS=<operations per phase>``.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.system.conftest import Mount
from vmstore.dfs.constants import CHUNK_SIZE_BYTES

pytestmark = pytest.mark.system

OPS_PER_PHASE = int(os.environ.get("VMSTORE_FSX_OPS", "700"))
SEED = int(os.environ.get("VMSTORE_FSX_SEED", str(random.randrange(2**32))))
SPAN_BYTES = 512 * 1024  # how far past ``base`` the file may reach
WRITE_BYTES_MAX = 64 * 1024
DIRECT_BLOCK_BYTES = 4096
FULL_CHECK_EVERY_OPS = 50
# Waits for the mount's attribute timeout (1 s) after a close, per phase: each
# costs that second, and each would catch a size the master has wrong.
EXPIRY_WAITS_PER_PHASE = 2
ATTR_EXPIRY_S = 1.2
HISTORY_OPS = 30


@dataclass
class Model:
    """The file's bytes from ``base`` on (everything below ``base`` stays zeros)."""

    base: int
    data: bytearray = field(default_factory=bytearray)

    @property
    def size(self) -> int:
        return self.base + len(self.data)

    def write(self, offset: int, payload: bytes) -> None:
        assert offset >= self.base
        start = offset - self.base
        if start > len(self.data):
            self.data.extend(bytes(start - len(self.data)))
        self.data[start:start + len(payload)] = payload

    def truncate(self, size: int) -> None:
        assert size >= self.base
        length = size - self.base
        if length < len(self.data):
            del self.data[length:]
        else:
            self.data.extend(bytes(length - len(self.data)))

    def read(self, offset: int, length: int) -> bytes:
        """What a read of ``length`` at ``offset`` (both at or past ``base``) returns."""
        start = offset - self.base
        return bytes(self.data[start:start + length])


class Fsx:
    """Runs one phase's operations on ``path`` and checks each against the model."""

    def __init__(self, path: Path, rng: random.Random, base: int, direct: bool) -> None:
        self.path = path
        self.rng = rng
        self.direct = direct
        self.model = Model(base)
        self.history: deque[str] = deque(maxlen=HISTORY_OPS)
        self.expiry_waits = 0
        # O_DIRECT wants page-aligned buffers: one mapping, reused.
        self.buffer = mmap.mmap(-1, WRITE_BYTES_MAX) if direct else None
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC
        self.fd = os.open(path, flags, 0o644)
        if base:
            os.ftruncate(self.fd, base)
        self.history.append(f"open O_TRUNC, truncate {base}")

    def close(self) -> None:
        os.close(self.fd)
        if self.buffer is not None:
            self.buffer.close()

    def open_again(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | (os.O_DIRECT if self.direct else 0))

    # --- operations -------------------------------------------------------------------
    def _span(self, length_max: int) -> tuple[int, int]:
        """An offset and length inside the phase's window, aligned when direct."""
        unit = DIRECT_BLOCK_BYTES if self.direct else 1
        if self.rng.random() < 0.4:  # near the end, where sizes are decided
            near = self.model.size - self.model.base + self.rng.randint(-16384, 4096)
            start = min(max(0, near), SPAN_BYTES - 1)
        else:
            start = self.rng.randrange(0, SPAN_BYTES)
        offset = self.model.base + start // unit * unit
        length_max = min(length_max, self.model.base + SPAN_BYTES - offset)
        small = self.rng.random() < 0.7
        length = self.rng.randint(1, max(1, min(length_max, 4 * 1024 if small else length_max)))
        length = max(unit, length // unit * unit)
        return offset, length

    def write(self) -> tuple[int, int]:
        offset, length = self._span(WRITE_BYTES_MAX)
        zeros = self.rng.random() < 0.2
        payload = bytes(length) if zeros else self.rng.randbytes(length)
        self.history.append(f"pwrite {length} {'zeros' if zeros else 'bytes'} at {offset}")
        if self.buffer is not None:
            self.buffer[:length] = payload
            written = os.pwritev(self.fd, [memoryview(self.buffer)[:length]], offset)
        else:
            written = os.pwrite(self.fd, payload, offset)
        assert written == length
        self.model.write(offset, payload)
        return offset, length

    def truncate(self) -> tuple[int, int]:
        size = self.model.base + self.rng.randrange(0, SPAN_BYTES + 1)
        if self.rng.random() < 0.5:  # often a little down or up from where it is
            size = max(self.model.base, self.model.size + self.rng.randint(-20000, 5000))
        self.history.append(f"ftruncate {size} (from {self.model.size})")
        os.ftruncate(self.fd, size)
        self.model.truncate(size)
        return max(self.model.base, size - 4096), 8192

    def sync(self) -> tuple[int, int]:
        data_only = self.rng.random() < 0.5
        self.history.append("fdatasync" if data_only else "fsync")
        (os.fdatasync if data_only else os.fsync)(self.fd)
        return self._span(WRITE_BYTES_MAX)

    def reopen(self) -> tuple[int, int]:
        os.close(self.fd)
        wait = (self.expiry_waits < EXPIRY_WAITS_PER_PHASE
                and self.rng.random() < 4 * EXPIRY_WAITS_PER_PHASE / OPS_PER_PHASE)
        self.history.append("close, wait for attributes to expire, reopen" if wait
                            else "close, reopen")
        if wait:
            self.expiry_waits += 1
            time.sleep(ATTR_EXPIRY_S)  # the kernel's cache must expire: nothing to poll
            assert os.stat(self.path).st_size == self.model.size, "stat after expiry"
        self.open_again()
        self.probe_end()
        self.check_all()
        return self._span(WRITE_BYTES_MAX)

    def step(self) -> None:
        choice = self.rng.random()
        if choice < 0.5:
            touched = self.write()
        elif choice < 0.7:
            touched = self.truncate()
        elif choice < 0.85:
            touched = self.sync()
        elif choice < 0.93:
            touched = self.reopen()
        else:
            self.history.append("read")
            touched = self._span(WRITE_BYTES_MAX)
        self.check(*touched)

    # --- checks -------------------------------------------------------------------------
    def _pread(self, offset: int, length: int) -> bytes:
        if self.buffer is None:
            return os.pread(self.fd, length, offset)
        got = os.preadv(self.fd, [memoryview(self.buffer)[:length]], offset)
        return bytes(self.buffer[:got])

    def check(self, offset: int, length: int) -> None:
        size = os.fstat(self.fd).st_size
        assert size == self.model.size, f"fstat size {size}, model {self.model.size}"
        if self.direct:
            offset -= (offset - self.model.base) % DIRECT_BLOCK_BYTES
            length = min(WRITE_BYTES_MAX, -(-length // DIRECT_BLOCK_BYTES) * DIRECT_BLOCK_BYTES)
        got = self._pread(offset, length)
        expected = self.model.read(offset, length)
        if got != expected:
            raise AssertionError(f"read of {length} at {offset}: {_difference(got, expected)}")

    def probe_end(self) -> None:
        """Read across the end through an O_DIRECT handle: the kernel does not clip it
        to the size it has cached, so it shows the size the mount got from the master
        at the open, at once, not only after the kernel's attributes expire."""
        aligned = self.model.size - self.model.size % DIRECT_BLOCK_BYTES
        with mmap.mmap(-1, 2 * DIRECT_BLOCK_BYTES) as buffer:
            probe = os.open(self.path, os.O_RDONLY | os.O_DIRECT)
            try:
                got = os.preadv(probe, [buffer], aligned)
            finally:
                os.close(probe)
        expected = self.model.size - max(aligned, self.model.base)
        if aligned >= self.model.base:
            assert got == expected, f"O_DIRECT read at {aligned} got {got} bytes, not {expected}"

    def check_all(self) -> None:
        step = WRITE_BYTES_MAX
        for offset in range(self.model.base, self.model.size + step, step):
            self.check(offset, step)


def _difference(got: bytes, expected: bytes) -> str:
    if len(got) != len(expected):
        return f"{len(got)} bytes, expected {len(expected)}"
    first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b)
    return (f"first difference at +{first}:"
            f" {got[first:first + 8]!r} != {expected[first:first + 8]!r}")


def run_phase(path: Path, seed: int, base: int, direct: bool) -> None:
    fsx = Fsx(path, random.Random(seed), base, direct)
    try:
        for number in range(OPS_PER_PHASE):
            fsx.step()
            if number % FULL_CHECK_EVERY_OPS == 0:
                fsx.check_all()
        os.close(fsx.fd)
        fsx.open_again()
        fsx.check_all()
    except BaseException as error:
        error.add_note(f"fsx seed {seed} (VMSTORE_FSX_SEED={SEED}), base {base}, direct"
                       f" {direct}; last operations, newest last:\n  "
                       + "\n  ".join(fsx.history))
        raise
    finally:
        fsx.close()


@pytest.mark.parametrize(("base", "direct"), [
    (0, False),
    (CHUNK_SIZE_BYTES - SPAN_BYTES // 2, False),  # across the first chunk boundary
    (0, True),
], ids=["buffered", "chunk-boundary", "o-direct"])
def test_random_operations_match_the_model(mount: Mount, base: int, direct: bool) -> None:
    print(f"VMSTORE_FSX_SEED={SEED} VMSTORE_FSX_OPS={OPS_PER_PHASE}")
    run_phase(mount.path / "fsx.img", SEED + base + direct, base, direct)
