"""vmstore core: the storage cluster, with no FUSE and no command line.

Layering (an arrow means "may import"; ``tests/test_layering.py`` enforces it)::

    dfs.client ─────┐
    dfs.master ─► dfs.metadata ─┤
    dfs.chunkserver ────────────┴─► dfs.protocol ─► dfs.{types, constants, errors}
    dfs.migration ─► dfs.client (+ libvirt)
    dfs.testing ─► any dfs.*

* ``dfs`` never imports ``vmstore.fuse``, ``vmstore.cli``, ``pyfuse3`` or ``dfs.testing``.
* ``dfs.master`` and ``dfs.chunkserver`` never import each other: they talk only
  through ``dfs.protocol``.
* ``dfs.metadata`` is synchronous: no trio, no network.
"""

from __future__ import annotations

__version__ = "0.1.0"
