"""The optimized extend-attention kernels of the ladder, as real Triton code.

Each module is a complete ``kernel.py`` (same ``launch`` signature as the baseline in
``assets/extend_attention.py``), written for this workload; each rung keeps the rungs
before it:

===================  ========================================================  =========================
rung                 what the code does                                        extra launch keys
===================  ========================================================  =========================
``baseline``         two loops (gathered prefix, then new tokens), one          —
                     program per (token tile, request, query head)
``unified_loop``     one loop over the keys in position order                    —
``head_packing``     PACK query heads of a GQA group share every K/V tile        ``PACK``
``split_kv``         the key range split over SPLITS programs + a reduce kernel  ``PACK``, ``SPLITS``
``persistent_grid``  PROGRAMS programs walk a sorted work list                    ``PACK``, ``PROGRAMS``
``combined``         split-KV work items in a persistent grid                    ``PACK``, ``SPLITS``, ``PROGRAMS``
``dispatch``         split_kv's kernels, launched per batch: decode-like tiles   ``PACK``, ``SPLITS``
                     shrunk, split and reduce only when the grid is small, no
                     scratch for whole tiles, q pre-scaled, lazy rescaling
===================  ========================================================  =========================

They are never priced by name: SIMX-1 measures what each one does (``instrument.py``).
The scripted policy climbs by writing them into the workspace's ``kernel.py``; the tests
hold every rung to the dev and held-out correctness suites in the Triton interpreter.
"""

from __future__ import annotations

from importlib import resources

RUNGS: tuple[str, ...] = (
    "baseline", "unified_loop", "head_packing", "split_kv", "persistent_grid", "combined",
    "dispatch",
)
# The launch keys each rung reads beyond BLOCK_M, BLOCK_N, num_warps and num_stages.
RUNG_KEYS: dict[str, tuple[str, ...]] = {
    "baseline": (),
    "unified_loop": (),
    "head_packing": ("PACK",),
    "split_kv": ("PACK", "SPLITS"),
    "persistent_grid": ("PACK", "PROGRAMS"),
    "combined": ("PACK", "SPLITS", "PROGRAMS"),
    "dispatch": ("PACK", "SPLITS"),
}


def rung_source(rung: str) -> str:
    """The source of one rung (``baseline`` is the original kernel)."""
    if rung not in RUNGS:
        raise KeyError(f"unknown rung {rung!r}; rungs: {', '.join(RUNGS)}")
    pkg = resources.files("ctxmem.workloads.kernel")
    path = pkg.joinpath("assets", "extend_attention.py") if rung == "baseline" else \
        pkg.joinpath("variants", f"{rung}.py")
    return path.read_text()


__all__ = ["RUNGS", "RUNG_KEYS", "rung_source"]
