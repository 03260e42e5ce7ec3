#!/usr/bin/env python3
"""Chunks allocated while the master's deletion pass runs lose their replicas.

Six threads each extend their own file by one 4 KiB block per 64 MiB chunk
(every write allocates a chunk) while another thread keeps creating and
unlinking a 40-chunk file (so deletion passes have work). Afterwards every
acknowledged block is read back through a fresh mount, and the master's
replica lists are compared with the chunk files on disk.

    python3 tests/stress/delete_race.py [SECONDS]

Not run by pytest (the race is probabilistic). It caught two deletion
races; run it after touching chunk allocation or the deletion pass.
"""
import glob
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.system.conftest import Cluster, Mount
from vmstore.cli.local_cluster import local_down

MiB = 2**20
SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 40
d = Path(tempfile.mkdtemp(prefix="delete-race-", dir="/var/tmp"))
cluster = Cluster(d / "cluster", 3)
mount = Mount(cluster, d / "cluster" / "mnt")
stop_at = time.monotonic() + SECONDS
results, problems = {}, []

def writer(t):
    path = mount.path / f"image-{t}.raw"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    written, i = {}, 0
    while time.monotonic() < stop_at:
        block = os.urandom(4096)
        try:
            os.pwrite(fd, block, i * 64 * MiB)
            written[i] = block
        except OSError as error:
            problems.append(f"{path.name}: write at chunk {i}: {error!r}")
            break
        i += 1
    try:
        os.fsync(fd)
    except OSError as error:
        problems.append(f"{path.name}: fsync: {error!r}")
    os.close(fd)
    results[path.name] = written

def deleter():
    n = 0
    while time.monotonic() < stop_at - 3:
        path = mount.path / f"old-{n}.raw"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        for k in range(40):
            os.pwrite(fd, os.urandom(4096), k * 64 * MiB)
        os.close(fd)
        os.unlink(path)
        n += 1
        time.sleep(0.5)

try:
    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    threads.append(threading.Thread(target=deleter))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mount.force_unmount()
    fresh = Mount(cluster, d / "cluster" / "mnt2")
    lost = []
    for name, written in results.items():
        fd = os.open(fresh.path / name, os.O_RDONLY)
        for k, block in written.items():
            try:
                if os.pread(fd, 4096, k * 64 * MiB) != block:
                    lost.append(f"{name} chunk {k}: wrong bytes")
            except OSError as error:
                lost.append(f"{name} chunk {k}: {error.strerror}")
        os.close(fd)
    fresh.force_unmount()
    print(f"acknowledged writes: {sum(map(len, results.values()))}; errors: {problems}")
    print(f"acknowledged blocks not read back: {len(lost)} {lost[:5]}")
finally:
    mount.force_unmount()
    local_down(cluster.directory)
# The damage, straight from the master's database and the chunkservers' disks.
db = sqlite3.connect(cluster.directory / "master" / "metadata.db")
on_disk = {}
for name in cluster.chunkserver_names:
    uuid = (cluster.directory / name / "server.uuid").read_text().strip()
    (server_id,) = db.execute("SELECT id FROM servers WHERE uuid = ?", (uuid,)).fetchone()
    on_disk[server_id] = {int(Path(p).stem, 16)
                          for p in glob.glob(f"{cluster.directory / name}/chunks/*/*.chunk")}
missing = db.execute("SELECT f.inode_id, f.chunk_index, r.chunk_id, r.server_id FROM replicas r"
                     " JOIN file_chunks f ON f.chunk_id = r.chunk_id").fetchall()
missing = [row for row in missing if row[2] not in on_disk[row[3]]]
print("replicas of live files listed by the master but absent on disk"
      " (inode, index, chunk, server):", missing)
print("cluster dir (logs, metadata.db):", d)
