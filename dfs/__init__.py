"""vmstore core: the storage cluster, with no FUSE and no command line.

Layering (an arrow means "may import"; ``tests/test_layering.py`` enforces it)::

    dfs.migration (+ libvirt) ─► dfs.client ─┐
    dfs.master ─► dfs.metadata ──────────────┤
    dfs.chunkserver ─────────────────────────┴─► dfs.protocol ─► dfs.{types, constants, errors}
    dfs.testing ─► any dfs.*

* ``dfs`` never imports ``vmstore.fuse``, ``vmstore.cli`` or ``pyfuse3``; nothing
  in ``dfs`` but ``dfs.testing`` itself imports ``dfs.testing``.
* ``dfs.master`` and ``dfs.chunkserver`` never import each other: they talk only
  through ``dfs.protocol``.
* ``dfs.client`` reaches the daemons only through ``dfs.protocol``, and
  ``dfs.migration`` reaches the cluster only through ``dfs.client``: neither
  imports ``dfs.master``, ``dfs.chunkserver`` or ``dfs.metadata``.
* ``dfs.metadata`` is synchronous: no trio, no network.
"""

from __future__ import annotations

__version__ = "0.1.0"
