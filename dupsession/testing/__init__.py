"""Test and demo aids that ship with the package but are never part of a session's path.

Nothing under `dupsession.core`, `dupsession.aio` or the endpoints imports this namespace
(tests/test_import_graph.py); the demo and the tests do.
"""
