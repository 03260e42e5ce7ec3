"""Which client changes the master answers before they are durable: one definition,
kept by the master (which commits them lazily) and the client (which counts them).

Promise, on the embedded master (``dfs.master.committer``): a change for which
``answered_before_durable`` is True is committed when answered and durable within
METADATA_SYNC_DELAY_S_MAX, or at the next ClientToMasterSyncMetadata; every other
change is durable before its reply, and so is every change committed before it
(one WAL fsync covers all the commits before it). These are the namespace changes
a local file system makes durable at the next fsync of the directory or the file,
not before.
"""

from __future__ import annotations

from vmstore.dfs.protocol import messages as m

_LAZY = frozenset({
    m.ClientToMasterCreate, m.ClientToMasterMkdir, m.ClientToMasterSymlink,
    m.ClientToMasterLink, m.ClientToMasterUnlink, m.ClientToMasterRmdir,
    m.ClientToMasterRename, m.ClientToMasterSetXattr, m.ClientToMasterRemoveXattr})


def answered_before_durable(request: m.Message) -> bool:
    """Whether ``request``'s change may be answered before it is durable."""
    if isinstance(request, m.ClientToMasterSetAttr):
        return request.size_bytes is None  # a truncate cut replicas first: durable
    if isinstance(request, m.ClientToMasterWriteEnd):
        return not request.durable  # a close's publish; an fsync's is durable
    return type(request) in _LAZY
