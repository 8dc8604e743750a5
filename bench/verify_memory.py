"""Memory of `verify` over a long log: resident set size sampled while it streams.

Run `python -m bench.verify_memory [--orders N]` (150,000 orders ≈ 1,000,000 events). Writes
the replay benchmark's order histories into four fresh SQLite stores, then runs the verify of
`yellowcart verify`
(`operations.audit.verify_stores`) in a fresh process (so the writing does not weigh on its
RSS) and prints the process's RSS every 100,000 events. The log
is read stream after stream (`read_by_stream`) in batches of 1,000 commits, and only the
stream being checked is held, so RSS stays flat however many events and streams are read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.replay import write
from operations.audit import verify_stores
from operations.catalog import SERVICES
from operations.stores import embedded_store_url
from shared.kernel.storage import open_event_store

SAMPLE_EVERY = 100_000


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def verify(directory: Path) -> None:
    stores = {
        name: await open_event_store(embedded_store_url(directory, name)) for name in SERVICES
    }
    seen = 0
    next_sample = SAMPLE_EVERY
    highest = rss_mb()
    began = time.perf_counter()
    print(f"{'events read':>12} {'RSS MB':>8}")
    print(f"{0:>12,} {rss_mb():>8.1f}")

    def advance(events: int) -> None:
        nonlocal seen, next_sample, highest
        seen += events
        if seen >= next_sample:
            next_sample += SAMPLE_EVERY
            current = rss_mb()
            highest = max(highest, current)
            print(f"{seen:>12,} {current:>8.1f}")

    try:
        report = await verify_stores(stores, None, advance)
    finally:
        for store in stores.values():
            await store.close()
    elapsed = time.perf_counter() - began
    streams = sum(summary.streams for summary in report.stores)
    print(
        f"verified {seen:,} events in {streams:,} streams in {elapsed:.1f} s "
        f"({seen / elapsed:,.0f} events/s), chains {'intact' if report.chain_ok else 'BROKEN'}; "
        f"highest RSS sampled {highest:.1f} MB"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=150_000)
    parser.add_argument("--verify-only", type=Path, help="verify the stores in this directory")
    arguments = parser.parse_args(argv)
    if arguments.verify_only is not None:
        asyncio.run(verify(arguments.verify_only))
        return
    with tempfile.TemporaryDirectory(prefix="yellowcart-bench-verify-") as name:
        directory = Path(name)
        written = asyncio.run(write(directory, arguments.orders))
        print(f"wrote {arguments.orders:,} orders, {written:,} events", flush=True)
        subprocess.run(
            [sys.executable, "-m", "bench.verify_memory", "--verify-only", str(directory)],
            check=True,
        )


if __name__ == "__main__":
    main()
