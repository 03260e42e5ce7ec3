"""Structured fields on log records, for logs that machines read.

    log.warning("chunk %d: replica on chunkserver %d is damaged; dropped",
                chunk_id, server_id, extra=about(chunk=chunk_id, server=server_id))

The text log format shows only the message (which names the same things, for
people); the JSON format (``--log-format json``) adds each field as a key, so
a log pipeline can select every event about chunk 12 or chunkserver 3 without
parsing sentences. Field names in use: ``chunk``, ``version``, ``server``,
``inode``, ``session``, ``epoch``, ``peer``, ``host``, ``pid``, ``error``,
``event`` (a short stable name of what happened).
"""

from __future__ import annotations

from typing import Any

CONTEXT_ATTRIBUTE = "vmstore_context"


def about(event: str, **fields: Any) -> dict[str, dict[str, Any]]:
    """The ``extra=`` argument that attaches ``event`` and ``fields`` to one record."""
    return {CONTEXT_ATTRIBUTE: {"event": event, **fields}}
