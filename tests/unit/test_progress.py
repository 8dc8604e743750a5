"""Progress off a terminal: a plain line every few seconds (by the clock given), never a redraw."""

from __future__ import annotations

import io

from rich.console import Console

from operations.progress import progress


def test_off_a_terminal_progress_is_a_plain_line_per_interval() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    now = [0.0]
    with progress(console, "verifying", "events", clock=lambda: now[0], every_s=5) as advance:
        advance(1000)  # t=0: too soon
        now[0] = 2.0
        advance(1000)  # t=2: too soon
        now[0] = 5.0
        advance(3000)  # t=5: a line
        now[0] = 6.0
        advance(1000)  # t=6: too soon after the last line
    lines = out.getvalue().splitlines()
    assert lines == ["verifying: 5,000 events (1,000 events/s)"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
