"""Just enough of a terminal to know which character each cell of the screen shows.

Used by lab_latency.py to time echoes from the bytes a terminal would get: plain ssh passes the
remote program's output through unchanged, but mosh sends screen *states* (it skips states,
redraws cells between changes and overlays a status bar), so a character in its output is not
an echo; a cell showing it is. Stdlib only; a VT100/xterm subset: printing with autowrap,
cursor moves, erases, insert/delete, scrolling regions. Attributes and modes are ignored.
"""

from __future__ import annotations

import re

_CSI = re.compile(rb"\x1b\[([0-?]*)[ -/]*([@-~])")
_CSI_PREFIX = re.compile(rb"\x1b\[[0-?]*[ -/]*\Z")
_OSC = re.compile(rb"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class Screen:
    """A rows x cols grid of bytes fed with terminal output; `grid[row][col]` is a cell."""

    def __init__(self, rows: int = 24, cols: int = 80) -> None:
        self.rows, self.cols = rows, cols
        self.grid = [bytearray(b" " * cols) for _ in range(rows)]
        self.row = self.col = 0
        self.top, self.bottom = 0, rows - 1
        self.wrap_next = False
        self.tail = b""  # an escape sequence cut by a read

    def text(self) -> str:
        return "\n".join(line.decode("ascii", "replace") for line in self.grid)

    def _scroll(self, top: int, bottom: int, n: int) -> None:
        """Move lines top..bottom up by n (down if n < 0), blanking what is exposed."""
        region = self.grid[top : bottom + 1]
        blank = [bytearray(b" " * self.cols) for _ in range(min(abs(n), len(region)))]
        region = region[n:] + blank if n > 0 else blank + region[: len(region) + n]
        self.grid[top : bottom + 1] = region[: bottom - top + 1]

    def _linefeed(self) -> None:
        if self.row == self.bottom:
            self._scroll(self.top, self.bottom, 1)
        else:
            self.row = min(self.rows - 1, self.row + 1)

    def _put(self, byte: int) -> None:
        if self.wrap_next:
            self.col = 0
            self._linefeed()
            self.wrap_next = False
        self.grid[self.row][self.col] = byte
        if self.col == self.cols - 1:
            self.wrap_next = True
        else:
            self.col += 1

    def feed(self, data: bytes) -> None:
        data = self.tail + data
        self.tail = b""
        i, n = 0, len(data)
        while i < n:
            b = data[i]
            if b == 0x1B:
                if i + 1 == n:
                    self.tail = data[i:]
                    return
                kind = data[i + 1]
                if kind == 0x5B:  # [
                    m = _CSI.match(data, i)
                    if m is None:
                        if _CSI_PREFIX.match(data, i):
                            self.tail = data[i:]
                            return
                        i += 2
                        continue
                    self._csi(m.group(1), m.group(2))
                    i = m.end()
                elif kind == 0x5D:  # ] OSC: titles and such
                    m = _OSC.match(data, i)
                    if m is None:
                        self.tail = data[i:]
                        return
                    i = m.end()
                elif kind in b"()*+#%":
                    if i + 2 >= n:
                        self.tail = data[i:]
                        return
                    i += 3
                else:
                    if kind == 0x4D:  # M: reverse index
                        if self.row == self.top:
                            self._scroll(self.top, self.bottom, -1)
                        else:
                            self.row = max(0, self.row - 1)
                    elif kind == 0x44:  # D: index
                        self._linefeed()
                    elif kind == 0x45:  # E: next line
                        self.col = 0
                        self._linefeed()
                    elif kind == 0x63:  # c: reset
                        self.__init__(self.rows, self.cols)  # type: ignore[misc]
                    i += 2
                continue
            i += 1
            if b >= 0x20 and b != 0x7F:
                if 0x80 <= b < 0xC0:
                    continue  # UTF-8 continuation: drawn with its lead byte
                self._put(b if b < 0x80 else ord("?"))
            elif b == 0x0D:
                self.col, self.wrap_next = 0, False
            elif b in (0x0A, 0x0B, 0x0C):
                self._linefeed()
                self.wrap_next = False
            elif b == 0x08:
                self.col, self.wrap_next = max(0, self.col - 1), False
            elif b == 0x09:
                self.col = min(self.cols - 1, (self.col // 8 + 1) * 8)

    def _csi(self, raw: bytes, final_byte: bytes) -> None:
        if raw[:1] in (b"?", b">", b"=", b"<"):
            return  # private modes: cursor visibility, alternate screen, ...
        params = [int(p) if p.isdigit() else 0 for p in raw.split(b";")] if raw else []
        first = params[0] if params else 0
        count = max(1, first)
        final = final_byte.decode()
        self.wrap_next = False
        if final in "Hf":
            self.row = (first or 1) - 1
            self.col = (params[1] if len(params) > 1 and params[1] else 1) - 1
        elif final == "A":
            self.row -= count
        elif final == "B":
            self.row += count
        elif final in "Ca":
            self.col += count
        elif final == "D":
            self.col -= count
        elif final == "E":
            self.row, self.col = self.row + count, 0
        elif final == "F":
            self.row, self.col = self.row - count, 0
        elif final in "G`":
            self.col = count - 1
        elif final == "d":
            self.row = count - 1
        elif final == "K":
            line = self.grid[self.row]
            start, end = {0: (self.col, self.cols), 1: (0, self.col + 1)}.get(first, (0, self.cols))
            line[start:end] = b" " * (end - start)
        elif final == "J":
            rows = {0: range(self.row + 1, self.rows), 1: range(0, self.row)}.get(
                first, range(self.rows)
            )
            for r in rows:
                self.grid[r][:] = b" " * self.cols
            if first == 0:
                self.grid[self.row][self.col :] = b" " * (self.cols - self.col)
            elif first == 1:
                self.grid[self.row][: self.col + 1] = b" " * (self.col + 1)
        elif final == "X":
            end = min(self.cols, self.col + count)
            self.grid[self.row][self.col : end] = b" " * (end - self.col)
        elif final == "@":
            line = self.grid[self.row]
            line[self.col :] = (b" " * count + line[self.col :])[: self.cols - self.col]
        elif final == "P":
            line = self.grid[self.row]
            line[self.col :] = (line[self.col + count :] + b" " * count)[: self.cols - self.col]
        elif final in "LM" and self.top <= self.row <= self.bottom:
            self._scroll(self.row, self.bottom, -count if final == "L" else count)
        elif final == "S":
            self._scroll(self.top, self.bottom, count)
        elif final == "T":
            self._scroll(self.top, self.bottom, -count)
        elif final == "r":
            top = (first or 1) - 1
            bottom = (params[1] if len(params) > 1 and params[1] else self.rows) - 1
            if 0 <= top < bottom < self.rows:
                self.top, self.bottom = top, bottom
            self.row = self.col = 0
        self.row = min(max(self.row, 0), self.rows - 1)
        self.col = min(max(self.col, 0), self.cols - 1)
