"""One evaluation worker for the distributed-grid tests (run as a script, not collected).

    python pg_eval_worker.py URL DELAY_S LEASE_S

Runs the 12-cell test grid against the results store at URL (``open_results``) with an
extractive reader that sleeps DELAY_S per answer, then prints ``calls N``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ctxmem.clients import FunctionClient
from ctxmem.clients.base import ModelRequest
from ctxmem.evals.grid import expand
from ctxmem.evals.readers import ExtractiveReader
from ctxmem.evals.runner import run_sync
from ctxmem.evals.store import open_results


def grid() -> list[Any]:
    return expand(sources=["prose"], lengths=[1_000, 2_000], depths=[0.0, 0.5, 1.0], needles=["literal"],
                  seeds=[0, 1])


def main(url: str, delay: float, lease: float) -> None:
    calls = 0

    def slow(req: ModelRequest) -> str:
        nonlocal calls
        calls += 1
        sys.stdout.write("answer\n")
        sys.stdout.flush()
        time.sleep(delay)
        return ExtractiveReader().answer(req.messages)

    with open_results(url, lease_s=lease) as store:
        run_sync(grid(), {"extractive": FunctionClient(slow)}, store, concurrency=2)
    print(f"calls {calls}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
