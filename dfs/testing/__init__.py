"""vmstore's test kit, shipped as ``trio.testing`` is: the real services, in one process.

* ``simnet``: an in-memory network with seeded delays, retransmits,
  partitions, silent hosts and crashes (``dfs.protocol.network``'s seam).
* ``faulty_store``: the real chunk store with EIO, torn writes, bit flips
  and hangs laid over it.
* ``cluster``: a master, chunkservers and clients on that network, each of
  which a test can crash, restart, cut off or give a sick disk.
* ``model``: a plain in-memory model of files, to check a run against.

Nothing in ``dfs`` imports this package; it may import any of ``dfs``.
"""
