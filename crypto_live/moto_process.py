"""moto's standalone server as its own process (``python -m crypto_live.moto_process -H HOST -p
PORT``), with what it stores kept out of the cyclic garbage collector's full collections.

moto holds every record put into its streams and every item of its tables as Python objects.
A full collection walks all of them: with a million records stored (ten minutes at 2,000
symbols/s) one took seconds, during which moto answered nothing, so the consumers' lease
renewals went unanswered for over 8 s and their leases were given up and taken back (a re-read
of every shard). Here a thread freezes the heap every FREEZE_SECONDS after a young-generation
collection: what has lived that long (stored data, mostly) leaves the collector's walks, and
full collections cover only what came since. Nothing else of moto changes.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Final

FREEZE_SECONDS: Final = 10.0


def freeze_periodically(interval: float = FREEZE_SECONDS) -> threading.Thread:
    """Start a daemon thread that collects the young generations and freezes the heap every
    ``interval`` seconds."""

    def run() -> None:
        while True:
            time.sleep(interval)
            gc.collect(1)  # the young garbage first: frozen, it would never be collected
            gc.freeze()

    thread = threading.Thread(target=run, name="moto-heap-freezer", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    from moto.server import main

    freeze_periodically()
    main()
