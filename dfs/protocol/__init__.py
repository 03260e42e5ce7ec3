"""The wire: message definitions, frame codec, authenticated RPC connections.

Depends only on ``dfs.types``, ``dfs.constants`` and ``dfs.errors``.
"""
