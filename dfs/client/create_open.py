"""A create that opens what it made: one master round trip and one commit.

Promise: ``create_and_open`` leaves the client exactly as ``Client.create``
followed by ``Client.opened`` would (the file held at the master for this
session, its handle counted here, and for a writer the write lease held at
the master and known here), but the master does all of it in the create's
own transaction (ClientToMasterCreate with ``open_handle`` and
``write_lease``): the open(O_CREAT) of a new file costs one round trip and
one commit instead of three round trips and two commits.

Caveat: as for ``Client.opened``, a call cancelled after the master
committed leaves the hold and the lease with the session at the master (the
client never heard of them) until the session ends.
"""

from __future__ import annotations

from vmstore.dfs.client.client import Client
from vmstore.dfs.protocol import messages as m


async def create_and_open(client: Client, parent: int, name: bytes, mode: int, uid: int,
                          gid: int, *, writable: bool) -> m.FileAttrs:
    """Create regular file ``name`` in ``parent`` and open it (for writing if ``writable``).

    Every such call has one ``Client.closed`` (with the same ``writable``), as an
    ``opened`` has.
    """
    reply = await client.master.mutate(m.ClientToMasterCreate(
        session_id=0, op_id=0, parent=parent, name=name, mode=mode, uid=uid, gid=gid,
        open_handle=True, write_lease=writable), reply_type=m.AttrsReply)
    inode = reply.attrs.inode
    client.io.replicas_changed()  # as Client.opened: where chunks are is asked afresh
    if writable:
        client.leases.taken_at_create(inode, reply.lease_epoch)
    first = client.files.get(inode).handle_opened(writable)
    assert first, f"inode {inode}: a new file already open here"
    return reply.attrs
