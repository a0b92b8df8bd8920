"""Tuning context budgets: price model, replay costing, sweeps with a Pareto front, KV-cache estimates.

* :mod:`ctxmem.tune.prices` — a dated, sourced price table (``prices.toml``), overridable.
* :mod:`ctxmem.tune.replay` — replay a session under a strategy; tokens, cache hits, dollars.
* :mod:`ctxmem.tune.sweep` — presets × budgets on a workload; Pareto front; recommended preset.
* :mod:`ctxmem.tune.kv` — KV-cache memory and the longest context on a GPU, from ``config.json``.

Nothing here imports numpy or matplotlib at import time; plotting imports matplotlib lazily.
"""

from ctxmem.tune.kv import AttentionLayout, KVEstimate, estimate, layout_from_config
from ctxmem.tune.prices import (
    MissingPriceError,
    ModelPrice,
    Price,
    PriceTable,
    get_price,
    load_prices,
)
from ctxmem.tune.replay import (
    CostReport,
    Recording,
    TurnCost,
    compare,
    recording_from_session,
    replay_cost,
)
from ctxmem.tune.sweep import (
    Cell,
    SweepResult,
    pareto_front,
    parse_objective,
    plot_pareto,
    recommend,
    run_sweep,
    sweep_to_dir,
    write_preset,
)

__all__ = [
    "AttentionLayout",
    "Cell",
    "CostReport",
    "KVEstimate",
    "MissingPriceError",
    "ModelPrice",
    "Price",
    "PriceTable",
    "Recording",
    "SweepResult",
    "TurnCost",
    "compare",
    "estimate",
    "get_price",
    "layout_from_config",
    "load_prices",
    "pareto_front",
    "parse_objective",
    "plot_pareto",
    "recommend",
    "recording_from_session",
    "replay_cost",
    "run_sweep",
    "sweep_to_dir",
    "write_preset",
]
