"""The ``synthetic`` workload: a deterministic tool-heavy transcript with planted needles.

:mod:`~ctxmem.workloads.synthetic.generator` writes the transcript from a seed;
:mod:`~ctxmem.workloads.synthetic.workload` makes it a :class:`~ctxmem.workloads.Workload`.
"""

from ctxmem.workloads.synthetic.generator import synthetic_session

__all__ = ["synthetic_session"]
