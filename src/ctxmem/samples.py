"""Backward-compatible name for :mod:`ctxmem.workloads.synthetic.generator`.

The synthetic session generator is the ``synthetic`` workload's now; this module keeps
``from ctxmem.samples import synthetic_session`` working for scripts written before.
"""

from ctxmem.workloads.synthetic.generator import synthetic_session

__all__ = ["synthetic_session"]
