"""What every message is built from: checked integer field types, the bases, generic replies.

``Message`` is a frozen msgspec Struct encoded as a msgpack array; ``TYPE``
is its number in the frame header (0: not a message). ``Request`` adds
``REPLY``, the struct of its successful reply. Any request may instead be
answered with ``ErrorReply``; ``EmptyReply`` is the success that carries
nothing.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

# Every integer on the wire is checked by the decoder, so that no handler
# meets a value SQLite cannot store (OverflowError) or a negative id, size,
# offset or count. A request that breaks these is answered InvalidArgument
# naming the field (``codec.decode_body``).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
U63 = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]  # ids, sizes, offsets, counts, modes
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]  # times (before 1970: < 0)
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class Message(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    TYPE: ClassVar[int] = 0


class Request(Message, frozen=True, kw_only=True):
    REPLY: ClassVar[type[Message]]


# --- generic replies ----------------------------------------------------------
class EmptyReply(Message, frozen=True, kw_only=True):
    TYPE: ClassVar[int] = 1


class ErrorReply(Message, frozen=True, kw_only=True):
    """``code`` is a ``dfs.errors`` code; ``message`` names what failed."""

    TYPE: ClassVar[int] = 2
    code: U63
    message: str
    server_id: U63 = 0  # the chunkserver at fault, if any (see DfsError.server_id)
