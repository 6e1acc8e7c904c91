"""A job's progress: a bar on a terminal (tqdm), a plain line every few seconds elsewhere (a log,
a CI job), and the summary at the end."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import IO


@dataclass
class Tally:
    """What a job, or one part of it, has done."""

    documents: int = 0
    rows: int = 0
    tokens: int = 0
    skipped: int = 0


class Progress:
    def __init__(
        self,
        total: int,
        already: int,
        *,
        stream: IO[str] | None = None,
        every_s: float = 10.0,
    ) -> None:
        """`total` documents, `already` of them done by an earlier run."""
        self.stream = stream or sys.stderr
        self.total = total
        self.already = already
        self.every_s = every_s
        self.tally = Tally()
        self.started = time.monotonic()
        self._last_line = self.started
        self._bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=already,
                unit="doc",
                file=self.stream,
                dynamic_ncols=True,
                smoothing=0.05,
            )

    def advance(self, documents: int, rows: int, tokens: int, skipped: int = 0) -> None:
        tally = self.tally
        tally.documents += documents
        tally.rows += rows
        tally.tokens += tokens
        tally.skipped += skipped
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(documents + skipped)
            self._bar.set_postfix_str(f"{tally.tokens / self.seconds:,.0f} tokens/s", refresh=False)
        elif now - self._last_line >= self.every_s:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        """One progress line: done, rate, tokens/s and the time left."""
        tally = self.tally
        done = self.already + tally.documents + tally.skipped
        rate = (tally.documents + tally.skipped) / self.seconds
        left = (self.total - done) / rate if rate else float("inf")
        share = done / self.total if self.total else 1.0
        return (
            f"read {done:,} of {self.total:,} documents ({share:.0%}), {rate:,.0f} docs/s, "
            f"{tally.tokens / self.seconds:,.0f} tokens/s, {_duration(left)} left"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def summary(self, resumed_parts: int) -> str:
        tally = self.tally
        chunks = f" as {tally.rows:,} chunks" if tally.rows != tally.documents else ""
        resumed = (
            f"; {self.already:,} documents in {resumed_parts} parts were done already"
            if resumed_parts
            else ""
        )
        return (
            f"done: {tally.documents:,} documents{chunks}, {tally.tokens:,} tokens in "
            f"{self.seconds:,.1f} s ({tally.documents / self.seconds:,.0f} docs/s, "
            f"{tally.tokens / self.seconds:,.0f} tokens/s); {tally.skipped:,} skipped{resumed}"
        )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown time"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
