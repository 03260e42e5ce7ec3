"""What `vmstore recover scan` reports about chunkserver data directories, as JSON.

The report is the contract between the two halves of a recovery from the chunkservers
alone: each chunkserver host scans its own data directories
(``dfs.chunkserver.recovery_scan``) and writes one report; the master's host reads them
all and builds new metadata from them (``dfs.metadata.recovery_build``). Like the
replica format, it sits below both so that both use one definition; decoding checks
every field's type and range, so a damaged or foreign file is refused, naming what is
wrong, before anything is built from it.
"""

from __future__ import annotations

import msgspec

from vmstore.dfs.errors import InvalidArgument
from vmstore.dfs.protocol.messages.base import U63

REPORT_FORMAT = "vmstore-recover-scan-1"


class ScannedReplica(msgspec.Struct, frozen=True, kw_only=True):
    """One replica file, as its header and its blocks say."""

    chunk_id: U63
    version: U63
    inode: U63 | None  # the owner record's; None: the header has none
    index: U63 | None  # the chunk's index in that file
    verified: bool  # every block matched its checksum
    bad_blocks: list[tuple[U63, U63]]  # [first, end) block ranges that did not
    data_end_bytes: U63  # end of the last non-zero byte in the chunk; 0: all zeros


class ScannedDataDir(msgspec.Struct, frozen=True, kw_only=True):
    """One chunkserver's data directory."""

    data_dir: str
    server_uuid: str  # its identity (server.uuid); the master knows it by this
    cluster_id: str  # of the newest master it accepted (cluster.json); "": none
    generation: U63  # of that master's metadata; 0: none
    replicas: list[ScannedReplica]
    unreadable: list[str]  # replica files whose header or table could not be read, and why


class ScanReport(msgspec.Struct, frozen=True, kw_only=True):
    format: str
    host: str  # where the scan ran, for the operator
    scanned_at_ns: U63
    data_dirs: list[ScannedDataDir]


def encode_report(report: ScanReport) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=1) + b"\n"


def decode_report(raw: bytes, source: str) -> ScanReport:
    """The report in *raw* (read from *source*); InvalidArgument naming what is wrong."""
    try:
        report = msgspec.json.decode(raw, type=ScanReport)
    except msgspec.DecodeError as error:
        raise InvalidArgument(f"{source}: not a vmstore recover scan report: {error}") from None
    if report.format != REPORT_FORMAT:
        raise InvalidArgument(f"{source}: report format {report.format!r}, expected"
                              f" {REPORT_FORMAT!r}")
    return report
