"""Live progress of long work (a migration, an import, a rebuild, a drain): one
rewritten line on a terminal, a plain line every few seconds otherwise (logs, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from vmstore.dfs.constants import PROGRESS_PLAIN_INTERVAL_S


class ProgressDisplay:
    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self._last_plain_s = 0.0
        self._shown = False

    def show(self, line: str) -> None:
        """The current state: rewritten in place on a terminal, every 2 s otherwise."""
        if self.terminal:
            self.stream.write("\r\x1b[K" + line)
            self._shown = True
        elif time.monotonic() - self._last_plain_s >= PROGRESS_PLAIN_INTERVAL_S:
            self.stream.write(line + "\n")
            self._last_plain_s = time.monotonic()
        self.stream.flush()

    def say(self, message: str) -> None:
        self.finish()
        self.stream.write(message + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self._shown = False
