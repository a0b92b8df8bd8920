"""A catalog of realistic kernel bugs, each a source edit with a documented symptom.

Each :class:`Bug` turns the baseline kernel (``assets/extend_attention.py``) into a broken
one by one exact text replacement, and says how the correctness checker must report it.
The scripted policy draws its compile/fix loops from this catalog, and the tests hold every
entry to its documented failure, so the catalog and the checker cannot drift apart.

Symptoms:

* ``oob_write`` — some case reports writes into the NaN guard bands around ``out``;
* ``mismatch`` — values outside tolerance (finite);
* ``nan`` — NaN in the output (a load that should have been masked read a poisoned row);
* ``error`` — the candidate raises while running.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ctxmem.workloads.kernel.workspace import WorkspaceError

Symptom = Literal["oob_write", "mismatch", "nan", "error"]


@dataclass(frozen=True, slots=True)
class Bug:
    name: str
    description: str
    symptom: Symptom
    old: str
    new: str

    def apply(self, source: str) -> str:
        count = source.count(self.old)
        if count != 1:
            raise WorkspaceError(
                f"bug {self.name!r} does not apply: its anchor occurs {count} times in the source"
            )
        return source.replace(self.old, self.new)


CATALOG: tuple[Bug, ...] = (
    Bug(
        name="store_without_row_mask",
        description="the final tl.store masks head_dim but not the query rows, so the last "
        "tile of a request writes past its rows (and past the end of out)",
        symptom="oob_write",
        old="        out.to(Out.dtype.element_ty),\n        mask=mask_m[:, None] & mask_d[None, :],",
        new="        out.to(Out.dtype.element_ty),\n        mask=mask_d[None, :],",
    ),
    Bug(
        name="causal_strict",
        description="the causal mask uses < instead of <=, so a new token does not see itself",
        symptom="mismatch",
        old="(offs_n[None, :] <= offs_m[:, None])",
        new="(offs_n[None, :] < offs_m[:, None])",
    ),
    Bug(
        name="window_off_by_one",
        description="the sliding window keeps keys at position p - window (>= instead of >) "
        "in the prefix phase",
        symptom="mismatch",
        old="visible = visible & (offs_n[None, :] > q_pos[:, None] - window)",
        new="visible = visible & (offs_n[None, :] >= q_pos[:, None] - window)",
    ),
    Bug(
        name="prefix_value_load_unmasked",
        description="prefix values are loaded without the prefix mask, reading stale table "
        "slots (poisoned pool rows): 0 * NaN poisons the accumulator",
        symptom="nan",
        old="            mask=mask_n[:, None] & mask_d[None, :],\n            other=0.0,\n"
        "        )\n        m_i, l_i, acc = _online_softmax_step(s, visible, m_i, l_i, acc, v)\n\n"
        "    # ---- phase 2",
        new="            mask=mask_d[None, :],\n            other=0.0,\n"
        "        )\n        m_i, l_i, acc = _online_softmax_step(s, visible, m_i, l_i, acc, v)\n\n"
        "    # ---- phase 2",
    ),
    Bug(
        name="gqa_head_mapping",
        description="query head h reads kv head h % num_kv_heads instead of h // group",
        symptom="mismatch",
        old="    kv_h = h // GROUP\n",
        new="    kv_h = h % (tl.num_programs(2) // GROUP)\n",
    ),
    Bug(
        name="block_shape_mismatch",
        description="the accumulator is allocated [BLOCK_N, BLOCK_D], which only works when "
        "BLOCK_M == BLOCK_N",
        symptom="error",
        old="acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)",
        new="acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)",
    ),
)

BUGS: dict[str, Bug] = {bug.name: bug for bug in CATALOG}

# Bugs of the optimized rungs (``variants/``): each anchor occurs once in the rungs it names,
# never in the baseline. The scripted policy draws from CATALOG + VARIANT_BUGS whichever
# applies to the code it just wrote.
VARIANT_BUGS: tuple[Bug, ...] = (
    Bug(
        name="packed_head_rows",
        description="the packed tile's rows map to heads with rows % PACK instead of "
        "rows // TOKENS, so some (head, token) rows are computed twice and others never",
        symptom="nan",
        old="heads = hg * PACK + rows // TOKENS",
        new="heads = hg * PACK + rows % PACK",
    ),
    Bug(
        name="split_chunk_rounding",
        description="the split-KV chunk rounds the tile count down, so the last tiles of a "
        "key range belong to no split",
        symptom="mismatch",
        old="chunk = ((tiles + SPLITS - 1) // SPLITS) * BLOCK_N",
        new="chunk = (tiles // SPLITS) * BLOCK_N",
    ),
    Bug(
        name="work_list_off_by_one",
        description="the persistent loop stops one entry early, so the last work item of "
        "the list is never processed",
        symptom="nan",
        old="for w in range(tl.program_id(0), num_work, NUM_PROGRAMS):",
        new="for w in range(tl.program_id(0), num_work - 1, NUM_PROGRAMS):",
    ),
)
ALL_BUGS: dict[str, Bug] = {bug.name: bug for bug in (*CATALOG, *VARIANT_BUGS)}
