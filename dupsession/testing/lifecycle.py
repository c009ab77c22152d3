"""The one shape of a test aid that runs something: started by `with`, always closed after.

Servers, shims, forwards and targets in tests/support and the netlab's `Lab` each used to spell
out the same `__enter__`/`__exit__` pair; they subclass `Running` instead and say only how they
start (if their constructor did not) and how they close.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Running:
    """`with helper:` runs `start()` and, however the body ends, `close()`."""

    def start(self) -> None:
        """Bring it up (nothing to do when the constructor did)."""

    def close(self) -> None:
        """Stop it and free what it holds; safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
