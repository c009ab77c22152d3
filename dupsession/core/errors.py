"""The core's error contract (h11's): what the peer does wrong is counted, what we do wrong raises.

- A peer's bad input (a frame that fails its tag, is malformed, is from another session) is
  never raised: the session counts it (`bad_frames`) and drops it. The peer cannot make our
  code take an exception path.
- Our own misuse of a session, a call its state forbids, raises `LocalProtocolError`. That is
  a bug in the caller, or a race it must handle (the session closed while the local side was
  still writing): catch it where such a race is expected, nowhere else.
"""

from __future__ import annotations


class LocalProtocolError(RuntimeError):
    """This end called the session in a state that forbids the call (e.g. `send` after the
    session closed or after `close_stream`). The session's state is unchanged."""
