"""A one-line progress bar on stderr, so that stdout carries only the tables."""

import sys
import time


class Progress:
    def __init__(self, total: int, stream=None, width: int = 30):
        self.total, self.done, self.width = max(total, 1), 0, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        # Redrawing in place only makes sense on a terminal; a log file gets one line per step instead.
        self.redraw = getattr(self.stream, "isatty", lambda: False)()

    def tick(self, label: str) -> None:
        """Marks the start of the next step, labelled `label`."""
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.start:5.0f}s {label}"
        self.done += 1
        if self.redraw:
            self.stream.write("\r\033[K" + line[:150])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        line = f"[{'#' * self.width}] {self.total}/{self.total} {time.perf_counter() - self.start:5.0f}s done"
        self.stream.write(("\r\033[K" if self.redraw else "") + line + "\n")
        self.stream.flush()
