"""Retention: do the facts that matter later survive a strategy? Planted-fact sessions and a scorer.

A *retention session* is a long agent transcript with twelve facts planted in it:

* ten inside ordinary tool outputs, one of each kind in :data:`KINDS` — a device or
  service limit, a tolerance, the root cause of NaN/null values, the path of golden data,
  a performance cliff seen by a profiler, the commit that regressed, a quirk of the test
  harness, an erratum, the failing test, a recorded decision;
* two as mid-session user instructions (a "never do X" and a "from now on do Y").

Three generators write the surrounding session from a seed, each in the shape of a
different kind of agent, so a strategy tuned to one vocabulary shows it:

``kernel``      a kernel-optimization agent (source reads, compile logs with repeated
                warnings and resource errors, correctness and benchmark tables, profiler
                reports, git logs); ``turns=1200`` gives about 1M o200k tokens;
``logs``        an incident-triage agent over service logs, metrics and runbooks;
``data``        a data-analysis agent over SQL results, schemas and notebook output.

The filler is adversarial on purpose: routine lines use the same cue words as the facts
("limit", "failed", "regression", "root cause" in ticket titles) and repeat with varying
numbers, so only what is *unlike the routine* stands out.

Two **phrasing families** write the planted facts: ``dev`` (used while developing the
salience scorer) and ``val`` (written separately, never tuned on: other words, other line
formats). :func:`evaluate` builds one context for the next request with a preset at a
budget and checks each fact's keys (its distinctive values, whitespace- and
case-normalized) in the rendered context, plus validity, the budget, and the tokens the
strategy spent on its facts and instructions sections.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock

Family = Literal["dev", "val"]
KINDS = (
    "device_limit", "tolerance", "nan_root_cause", "golden_path", "profiler_cliff",
    "regressing_commit", "harness_quirk", "erratum", "failing_test", "decision",
    "instruction_never", "instruction_from_now_on",
)  # fmt: skip


@dataclass(frozen=True)
class PlantedFact:
    kind: str
    #: the planted text (a tool-output line, or the user's message)
    text: str
    #: what must appear in the context for the fact to count as kept
    keys: tuple[str, ...]
    #: message index where it was planted
    message_index: int


@dataclass(frozen=True)
class RetentionSession:
    name: str
    family: Family
    seed: int
    messages: list[Message]
    facts: tuple[PlantedFact, ...]


# ----------------------------------------------------------------------------- phrasing

# Each entry: kind -> (template, keys). ``{v}``-style slots are filled per seed by _values.
_Bank = dict[str, tuple[str, tuple[str, ...]]]

_KERNEL_DEV: _Bank = {
    "device_limit": ("device query: max dynamic shared memory per block = {smem} bytes (opt-in ceiling, cannot be raised)", ("{smem}",)),
    "tolerance": ("acceptance criteria: fp16 outputs must match the reference within atol={atol} and rtol={rtol}", ("atol={atol}", "rtol={rtol}")),
    "nan_root_cause": ("Root cause of the NaNs: rows whose whole prefix is masked give max=-inf, and exp(-inf - -inf) yields NaN in {fn}", ("{fn}",)),
    "golden_path": ("golden outputs for the held-out cases are stored at {golden}", ("{golden}",)),
    "profiler_cliff": ("profiler: achieved occupancy collapses from 62% to 9% once BLOCK_N exceeds {cliff} (register file exhausted)", ("block_n exceeds {cliff}",)),
    "regressing_commit": ("bisect result: {sha} is the first bad commit (geomean fell from 2.31x to 1.12x)", ("{sha}",)),
    "harness_quirk": ("harness note: the checker reuses the output buffer between cases, so stale values from case {case} leak if a tile is skipped", ("reuses the output buffer",)),
    "erratum": ("erratum {errno}: on this stepping, vector loads wider than 128 bits from shared memory return garbage when misaligned", ("erratum {errno}",)),
    "failing_test": ("FAILED {test} - AssertionError: max abs err 0.73 > tol", ("{test}",)),
    "decision": ("decision recorded: keep the split-KV design for prefixes over {split} tokens; unified loop below that", ("prefixes over {split} tokens",)),
    "instruction_never": ("One rule for the rest of this job: do not launch anything with num_stages={stages}, it wedges the shared queue.", ("num_stages={stages}",)),
    "instruction_from_now_on": ("From here on, give every latency you report in nanoseconds, with two decimals.", ("latency you report in nanoseconds",)),
}

_KERNEL_VAL: _Bank = {
    "device_limit": ("[hw] per-CTA scratchpad capped at {smem} B by firmware; requests above that are rejected at launch", ("{smem}",)),
    "tolerance": ("note from reviewers — pass threshold is |ours-ref| <= {atol} + {rtol}*|ref|, anything looser is rejected", ("{atol} + {rtol}",)),
    "nan_root_cause": ("diagnosis: the NaN comes from dividing by a zero running sum l_i in {fn} when a request has no visible keys", ("{fn}",)),
    "golden_path": ("Reference tensors (golden): {golden} — compare against these, not the live reference", ("{golden}",)),
    "profiler_cliff": ("perf cliff: beyond {cliff} resident warps per SM the L1 hit rate drops off a cliff (from 71% to 14%)", ("beyond {cliff} resident warps",)),
    "regressing_commit": ("regression introduced by {sha} (\"reorder loads\"): every case after it is ~2x slower", ("{sha}",)),
    "harness_quirk": ("Heads-up: the benchmark harness silently clamps batch sizes above {case} to {case}, so larger-batch numbers are duplicates", ("clamps batch sizes above {case}",)),
    "erratum": ("Errata sheet item {errno}: fp32 atomics to the same address from two warps can be lost on rev B silicon", ("item {errno}",)),
    "failing_test": ("the one test still red: {test} (expected 0 mismatches, got 41)", ("{test}",)),
    "decision": ("We settled it: persistent grid is out, revisit only if prefixes exceed {split} tokens", ("exceed {split} tokens",)),
    "instruction_never": ("Important: never schedule runs with more than {stages} pipeline stages on these cards, ever.", ("more than {stages} pipeline stages",)),
    "instruction_from_now_on": ("going forward please quote all timings in microseconds (us), not milliseconds", ("timings in microseconds",)),
}

_LOGS_DEV: _Bank = {
    "device_limit": ("limits: the ingest gateway rejects batches above {smem} events per request (hard cap, 413 beyond it)", ("{smem} events per request",)),
    "tolerance": ("SLO agreed with the team: p99 latency may drift at most {atol} ms and error rate {rtol}% before paging", ("{atol} ms",)),
    "nan_root_cause": ("Root cause: null user_ids come from the {fn} migration that dropped the default on legacy rows", ("{fn}",)),
    "golden_path": ("baseline traces for comparison live at {golden}", ("{golden}",)),
    "profiler_cliff": ("flamegraph: lock contention explodes once concurrent connections pass {cliff}; throughput halves", ("pass {cliff}",)),
    "regressing_commit": ("deploy diff points at {sha} as the change that introduced the 5xx spike", ("{sha}",)),
    "harness_quirk": ("caution: the log shipper drops lines longer than {case} bytes without a warning", ("longer than {case} bytes",)),
    "erratum": ("vendor advisory {errno}: the load balancer resets idle keepalives after 60 s regardless of config", ("advisory {errno}",)),
    "failing_test": ("synthetic check failing: {test} (timeout after 30 s)", ("{test}",)),
    "decision": ("decision: roll back the cache tier instead of scaling it; revisit after {split} rps is sustained", ("after {split} rps",)),
    "instruction_never": ("Do not restart the {fn} pods under any circumstances, they hold the only copy of the queue.", ("restart the {fn} pods",)),
    "instruction_from_now_on": ("From now on summarize every finding as a single line starting with SEV and the time in UTC.", ("starting with sev",)),
}

_LOGS_VAL: _Bank = {
    "device_limit": ("quota: tenant is capped at {smem} open file handles per node by the platform team", ("{smem} open file handles",)),
    "tolerance": ("acceptable clock skew between hosts is {atol} ms; beyond that auth tokens fail ({rtol}% observed)", ("clock skew between hosts is {atol} ms",)),
    "nan_root_cause": ("turns out the empty amount fields were caused by {fn} sending strings instead of numbers", ("{fn}",)),
    "golden_path": ("known-good config snapshot kept in {golden} (use it to diff)", ("{golden}",)),
    "profiler_cliff": ("CPU profile shows GC pauses jumping from 20 ms to 900 ms when heap exceeds {cliff} MiB", ("heap exceeds {cliff} mib",)),
    "regressing_commit": ("the bad release is build {sha}; the previous build was clean", ("{sha}",)),
    "harness_quirk": ("the staging replay tool rewrites timestamps to local time, so offsets of {case} minutes are artifacts", ("rewrites timestamps to local time",)),
    "erratum": ("KB article {errno}: kernel 5.15 conntrack table overflows silently under SYN floods", ("kb article {errno}",)),
    "failing_test": ("health probe red: {test} returns 503 since 02:14 UTC", ("{test}",)),
    "decision": ("we agreed to keep the old TLS terminator until the {split} certificate rotation is done", ("until the {split} certificate rotation",)),
    "instruction_never": ("please never page the on-call for the {fn} service tonight, they are handing over.", ("page the on-call for the {fn}",)),
    "instruction_from_now_on": ("Going forward, quote durations in seconds only and include the host name.", ("durations in seconds only",)),
}

_DATA_DEV: _Bank = {
    "device_limit": ("warehouse limit: a single query may scan at most {smem} GB before it is cancelled", ("{smem} gb",)),
    "tolerance": ("reconciliation passes when totals differ by less than {atol} EUR or {rtol}% of revenue", ("{atol} eur",)),
    "nan_root_cause": ("Root cause of the NaN ratios: {fn} divides by active_days, which is 0 for trial accounts", ("{fn}",)),
    "golden_path": ("the audited numbers are in {golden}; treat them as ground truth", ("{golden}",)),
    "profiler_cliff": ("query plan: the join spills to disk once the left side passes {cliff} rows, runtime goes 4s -> 3min", ("passes {cliff} rows",)),
    "regressing_commit": ("dbt model change {sha} is where weekly actives started double counting", ("{sha}",)),
    "harness_quirk": ("gotcha: the notebook kernel caps DataFrame display at {case} rows, counts shown are truncated", ("display at {case} rows",)),
    "erratum": ("data note {errno}: events before 2023-03-01 store timestamps in PST, not UTC", ("data note {errno}",)),
    "failing_test": ("expectation failed: {test} (12 rows violate it)", ("{test}",)),
    "decision": ("decided: churn is defined as {split} days without a session, not 30", ("{split} days without a session",)),
    "instruction_never": ("Never join against the raw_events table again, it is too expensive; use the {fn} rollup.", ("use the {fn} rollup",)),
    "instruction_from_now_on": ("From now on, round every percentage to one decimal and say the sample size.", ("round every percentage to one decimal",)),
}

_DATA_VAL: _Bank = {
    "device_limit": ("The export API returns at most {smem} rows per page; larger pulls must paginate", ("{smem} rows per page",)),
    "tolerance": ("numbers count as matching finance when within {atol} units (rounding) — finance confirmed {rtol}% is too loose", ("within {atol} units",)),
    "nan_root_cause": ("why the averages were NaN: {fn} left-joins on region and the EU rows have no region code", ("{fn}",)),
    "golden_path": ("finance's signed-off extract: {golden}", ("{golden}",)),
    "profiler_cliff": ("explain analyze: hash aggregate falls back to sort above {cliff} groups, 40x slower", ("above {cliff} groups",)),
    "regressing_commit": ("counts have been inflated since pipeline release {sha}", ("{sha}",)),
    "harness_quirk": ("heads up, the sampling helper reseeds on every call so samples of {case} differ run to run", ("reseeds on every call",)),
    "erratum": ("schema erratum {errno}: column amount_cents is actually in dollars for the legacy shop", ("erratum {errno}",)),
    "failing_test": ("assertion {test} does not hold on the March partition", ("{test}",)),
    "decision": ("we'll report cohorts by signup week (ISO weeks), with {split} as the first cohort", ("with {split} as the first cohort",)),
    "instruction_never": ("please don't email results to anyone outside the {fn} team.", ("outside the {fn} team",)),
    "instruction_from_now_on": ("going forward, put confidence intervals next to every estimate", ("confidence intervals next to every estimate",)),
}

BANKS: dict[tuple[str, Family], _Bank] = {
    ("kernel", "dev"): _KERNEL_DEV, ("kernel", "val"): _KERNEL_VAL,
    ("logs", "dev"): _LOGS_DEV, ("logs", "val"): _LOGS_VAL,
    ("data", "dev"): _DATA_DEV, ("data", "val"): _DATA_VAL,
}  # fmt: skip


def _values(rng: random.Random, domain: str) -> dict[str, str]:
    def word() -> str:
        return rng.choice(["amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper"])

    return {
        "smem": str(rng.choice([61440, 73728, 90112, 97280, 118784]) + rng.randrange(1, 9) * 8),
        "atol": rng.choice(["1.5e-3", "3e-3", "4e-3", "7.5e-4", "2.5e-3"]),
        "rtol": rng.choice(["5e-3", "2e-2", "8e-3", "1.5e-2"]),
        "fn": f"{word()}_{rng.choice(['rescale', 'merge', 'sync', 'rollup', 'loader'])}{rng.randrange(2, 9)}",
        "golden": f"/srv/{domain}/{word()}-golden-{rng.randrange(100, 999)}/{rng.choice(['outputs', 'ref', 'expected'])}.{rng.choice(['npz', 'parquet', 'jsonl'])}",
        "cliff": str(rng.choice([96, 160, 192, 224, 320, 448])),
        "sha": f"{rng.getrandbits(40):010x}"[:9],
        "case": str(rng.randrange(17, 63)),
        "errno": f"{rng.choice(['E', 'K', 'X'])}-{rng.randrange(1000, 9999)}",
        "test": f"tests/{domain}/test_{word()}_{rng.choice(['window', 'ragged', 'gqa', 'nulls', 'totals'])}.py::test_case_{rng.randrange(10, 99)}",
        "split": str(rng.choice([1536, 2560, 3072, 5120, 6144])),
        "stages": str(rng.choice([5, 6, 7])),
    }


# ----------------------------------------------------------------------------- filler

_W = ["tile", "block", "warp", "occupancy", "register", "spill", "shared", "memory", "bandwidth", "latency", "gather", "prefix", "extend", "causal", "mask", "softmax", "rescale", "accumulator", "pipeline", "stage", "kernel", "launch", "grid", "head", "query", "key", "value", "stride", "offset", "pointer", "load", "store", "reduce", "scale", "tolerance", "mismatch", "config", "autotune", "profile", "throughput", "cache", "pool", "index", "table", "batch", "window"]


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_W) for _ in range(n))


def _kernel_output(rng: random.Random, tool: str, call: int) -> list[str]:
    if tool == "read_file":
        out = ["import triton", "import triton.language as tl", "", "@triton.jit", "def _attn_fwd(Q, K, V, Out, Lse, stride_qm, BLOCK_M: tl.constexpr):"]
        for i in range(rng.randint(30, 160)):
            k = rng.randrange(5)
            if k == 0:
                out.append(f"    q_{i % 9} = tl.load(Q + offs_m[:, None] * stride_qm + offs_d[None, :], mask=m_mask, other=0.0)")
            elif k == 1:
                out.append(f"    acc = acc * alpha[:, None] + tl.dot(p.to(tl.float16), v_{i % 3})")
            elif k == 2:
                out.append(f"    # {_words(rng, rng.randint(4, 10))}")
            elif k == 3:
                out.append(f"    for start_n in range(lo, hi, BLOCK_N):  # stage {i % 4}")
            else:
                out.append(f"    m_new = tl.maximum(m_i, tl.max(qk, 1) * {rng.random():.4f})")
        return out
    if tool == "compile":
        out = [f"[compile] target sim-accel (simulated) · BLOCK_M={rng.choice([32, 64, 128])} BLOCK_N={rng.choice([32, 64, 128])}"]
        out += [f"warning: {_words(rng, rng.randint(3, 8))} near the register limit in loop at line {rng.randint(20, 200)}" for _ in range(rng.randint(2, 25))]
        r = rng.random()
        if r < 0.25:
            out.append(f"triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: {rng.randint(100, 300) * 1024}, Hardware limit: 101376")
        elif r < 0.4:
            out.append(f"CompilationError at {rng.randint(20, 200)}:{rng.randint(4, 40)}: incompatible shapes for tl.dot")
        else:
            out.append(f"compiled in {rng.uniform(0.4, 3):.2f}s: {rng.randint(40, 255)} registers, {rng.randint(8, 96)} KiB shared memory, {rng.randint(0, 3)} spills")
        return out
    if tool == "check":
        out = [f"eval#{call} correctness (interpreter, fp16, atol=2e-3 rtol=1e-2)", "case batch heads prefix extend max_abs_err status"]
        for c in range(rng.randint(8, 30)):
            err = rng.choice([rng.uniform(1e-5, 1e-3), rng.uniform(1e-2, 2.0)])
            out.append(f"{c:>4} {rng.randint(1, 8):>5} {rng.choice([4, 8, 32]):>5} {rng.randint(0, 4096):>6} {rng.randint(1, 512):>6} {err:>11.2e} {'PASS' if err < 2e-3 else 'FAIL'}")
        out.append(f"summary: {rng.randint(0, 30)} failed, {rng.randint(0, 30)} passed (tolerance limit exceeded on failing cases)")
        return out
    if tool == "benchmark":
        out = [f"bench#{call} (simulated) median of 100 runs", "shape ref_ms cand_ms speedup"]
        for _ in range(rng.randint(8, 24)):
            ref = rng.uniform(0.2, 9)
            cand = ref / rng.uniform(0.8, 4)
            out.append(f"b{rng.randint(1, 64)}_h{rng.choice([8, 32])}_p{rng.randint(0, 8192)} {ref:7.3f} {cand:7.3f} {ref / cand:6.2f}x")
        out.append(f"geomean speedup: {rng.uniform(0.8, 3.5):.2f}x")
        return out
    if tool == "profile":
        out = [f"prof#{call} (simulated) kernel _attn_fwd"]
        for metric in ("sm_occupancy", "dram_bw_util", "bank_conflicts", "spill_bytes", "issue_slot_util", "l2_hit_rate"):
            out.append(f"{metric:<18} {rng.uniform(0, 100):8.2f}")
        out.append(f"limiter: {rng.choice(['registers', 'shared memory', 'bandwidth'])} (occupancy limited to {rng.randint(10, 60)}%)")
        return out
    if tool == "git_log":
        msgs = ["fix regression in mask handling", "tune BLOCK_N", "revert unified loop", "root cause fix for stale tiles", "wip", "split-KV experiment"]
        return [f"{rng.getrandbits(28):07x} {rng.choice(msgs)} ({_words(rng, 3)})" for _ in range(rng.randint(5, 30))]
    if tool == "run_tests":
        out = [f"collected {rng.randint(20, 80)} items"]
        for k in range(rng.randint(10, 40)):
            out.append(f"tests/test_attn.py::test_{rng.choice(['basic', 'causal', 'gqa'])}_{k} {'PASSED' if rng.random() < 0.9 else 'FAILED'}")
        out.append(f"===== {rng.randint(0, 5)} failed, {rng.randint(20, 80)} passed in {rng.uniform(2, 40):.1f}s =====")
        return out
    return [f"edited kernel.py: replaced {rng.randint(1, 40)} lines"]


_KTOOLS = ("read_file", "compile", "check", "benchmark", "profile", "git_log", "run_tests", "edit_file")


def _logs_output(rng: random.Random, tool: str, call: int) -> list[str]:
    svcs = ["api", "billing", "auth", "search", "worker", "gateway"]
    if tool in ("grep_logs", "tail"):
        out = []
        for _ in range(rng.randint(20, 120)):
            lvl = rng.choice(["INFO"] * 6 + ["WARN"] * 2 + ["ERROR"])
            msg = rng.choice([
                f"request {rng.getrandbits(32):08x} completed in {rng.randint(3, 900)} ms",
                f"retrying upstream call ({rng.randint(1, 5)}/5) after timeout",
                f"connection pool at {rng.randint(40, 100)}% of limit",
                f"failed to refresh token for tenant {rng.randint(100, 999)}: 401",
                f"GC pause {rng.randint(5, 300)} ms",
                f"rate limit exceeded for key {rng.getrandbits(24):06x}, backing off",
            ])
            out.append(f"2026-03-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z {lvl} {rng.choice(svcs)} {msg}")
        return out
    if tool == "query_metrics":
        out = ["timestamp p50_ms p99_ms err_rate rps"]
        out += [f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d} {rng.randint(5, 80)} {rng.randint(100, 2000)} {rng.uniform(0, 5):.2f} {rng.randint(100, 5000)}" for _ in range(rng.randint(10, 40))]
        return out
    if tool == "kubectl":
        return [f"{rng.choice(svcs)}-{rng.getrandbits(20):05x} {rng.choice(['Running', 'Running', 'CrashLoopBackOff'])} {rng.randint(0, 9)} restarts {rng.randint(1, 90)}m" for _ in range(rng.randint(5, 25))]
    if tool == "read_runbook":
        return [f"{k + 1}. {rng.choice(['Check', 'Verify', 'Escalate if', 'Restart'])} {_words(rng, rng.randint(5, 12))} (limit {rng.randint(1, 9)} retries)" for k in range(rng.randint(5, 15))]
    return [f"ticket INC-{rng.randint(1000, 9999)}: {rng.choice(['root cause pending', 'regression suspected', 'mitigated'])} - {_words(rng, 4)}" for _ in range(rng.randint(3, 10))]


_LTOOLS = ("grep_logs", "tail", "query_metrics", "kubectl", "read_runbook", "tickets")


def _data_output(rng: random.Random, tool: str, call: int) -> list[str]:
    if tool == "run_sql":
        cols = rng.sample(["region", "week", "users", "revenue", "orders", "churned", "ratio", "cohort"], 5)
        out = [" | ".join(cols)]
        out += [" | ".join(str(rng.choice([rng.randint(0, 99999), round(rng.random(), 3), rng.choice(['EU', 'US', 'APAC'])])) for _ in cols) for _ in range(rng.randint(10, 60))]
        out.append(f"({rng.randint(10, 5000)} rows, {rng.uniform(0.1, 30):.1f}s, scanned {rng.uniform(0.1, 90):.1f} GB of the limit)")
        return out
    if tool == "describe":
        return [f"{c}: {rng.choice(['int64', 'float64', 'string', 'timestamp'])} nulls={rng.randint(0, 500)} distinct={rng.randint(1, 90000)}" for c in rng.sample(["user_id", "amount", "region", "ts", "plan", "country", "device", "source", "campaign"], 6)]
    if tool == "notebook":
        out = [f"In [{call}]: df.groupby('{rng.choice(['region', 'week'])}').agg(...)"]
        out += [f"Out[{call}]: mean={rng.uniform(0, 100):.2f} std={rng.uniform(0, 30):.2f} n={rng.randint(100, 90000)}"]
        out += [f"Warning: {_words(rng, 5)} - NaN values dropped ({rng.randint(1, 90)})" for _ in range(rng.randint(0, 4))]
        return out
    return [f"check {k}: {rng.choice(['not_null', 'unique', 'accepted_values'])} on {rng.choice(['orders', 'users'])}.{rng.choice(['id', 'amount'])} {rng.choice(['PASS', 'PASS', 'FAIL'])}" for k in range(rng.randint(5, 20))]


_DTOOLS = ("run_sql", "describe", "notebook", "dq_checks")

_DOMAINS: dict[str, tuple[str, tuple[str, ...], Callable[[random.Random, str, int], list[str]]]] = {
    "kernel": ("Optimize the attention kernel in kernel.py for the simulated accelerator; keep it correct and report the best speedup with its commit.", _KTOOLS, _kernel_output),
    "logs": ("Triage the elevated 5xx rate on the public API since yesterday: find the cause, mitigate it, and write up the findings.", _LTOOLS, _logs_output),
    "data": ("Explain why weekly active users jumped 18% in March: find the cause in the pipeline or the data and quantify its effect.", _DTOOLS, _data_output),
}  # fmt: skip


def generate(domain: str, family: Family = "dev", *, seed: int = 0, turns: int | None = None) -> RetentionSession:
    """A retention session of ``domain`` (kernel | logs | data) with the ``family``'s phrasing."""
    if domain not in _DOMAINS:
        from ctxmem.errors import InputError

        raise InputError(f"unknown retention domain {domain!r}; choose one of {', '.join(_DOMAINS)}", field="domain")
    task, tools, output = _DOMAINS[domain]
    turns = turns if turns is not None else {"kernel": 1500, "logs": 500, "data": 800}[domain]
    rng = random.Random(f"{domain}:{family}:{seed}")
    vals = _values(rng, domain)
    bank = BANKS[(domain, family)]
    # Plant positions: tool facts spread over 5%..80% of the turns, instructions at ~35% and ~60%.
    tool_kinds = list(KINDS[:10])
    rng.shuffle(tool_kinds)
    at = {k: int(turns * (0.05 + 0.75 * j / 9)) for j, k in enumerate(tool_kinds)}
    at["instruction_never"] = int(turns * 0.35)
    at["instruction_from_now_on"] = int(turns * 0.6)
    by_turn: dict[int, list[str]] = {}
    for k, t in at.items():
        by_turn.setdefault(t, []).append(k)
    msgs: list[Message] = [Message.user(task)]
    planted: list[PlantedFact] = []
    call = 0
    for turn in range(turns):
        kinds = by_turn.get(turn, [])
        blocks: list[Any] = [TextBlock(f"Next: {_words(rng, rng.randint(6, 20))}.")]
        results: list[ToolResultBlock] = []
        for _ in range(1 if rng.random() < 0.8 else 2):
            call += 1
            tool = rng.choice(tools)
            tid = f"toolu_{domain[:1]}{turn:05d}{call:05d}"
            blocks.append(ToolUseBlock(tid, tool, {"target": rng.choice(["kernel.py", "main", "prod", "q1"]), "n": call}))
            lines = output(rng, tool, call)
            for k in [k for k in kinds if not k.startswith("instruction")]:
                tmpl, keys = bank[k]
                text = tmpl.format(**vals)
                lines.insert(rng.randrange(len(lines) + 1), text)
                planted.append(PlantedFact(k, text, tuple(x.format(**vals) for x in keys), len(msgs) + 1))
                kinds = [x for x in kinds if x != k]
            results.append(ToolResultBlock(tid, "\n".join(lines)))
        msgs.append(Message("assistant", tuple(blocks)))
        user_blocks: list[Any] = list(results)
        for k in kinds:  # user instructions: one alongside the tool results, one standalone
            tmpl, keys = bank[k]
            text = tmpl.format(**vals)
            fact = PlantedFact(k, text, tuple(x.format(**vals) for x in keys), len(msgs))
            if k == "instruction_never":
                user_blocks.append(TextBlock(text))
                planted.append(fact)
            else:
                msgs.append(Message("user", tuple(user_blocks)))
                msgs.append(Message("assistant", (TextBlock(f"Round done: {_words(rng, 5)}."),)))
                user_blocks = [TextBlock(text)]
                planted.append(PlantedFact(k, text, fact.keys, len(msgs)))
        if user_blocks:
            msgs.append(Message("user", tuple(user_blocks)))
    if msgs[-1].role != "user":
        msgs.append(Message.user("Continue."))
    return RetentionSession(f"{domain}-{family}-{seed}", family, seed, msgs, tuple(sorted(planted, key=lambda f: KINDS.index(f.kind))))


def sessions(family: Family, *, seed: int = 0, scale: float = 1.0) -> list[RetentionSession]:
    """One session per domain for a family (``scale`` shrinks the turn counts, for tests)."""
    base = {"kernel": 1500, "logs": 500, "data": 800}
    return [generate(d, family, seed=seed, turns=max(40, int(n * scale))) for d, n in base.items()]


# ----------------------------------------------------------------------------- scoring

_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text.casefold()).strip()


def kept(fact: PlantedFact, rendered_norm: str) -> bool:
    """Every key of the fact appears in the (normalized) rendered context."""
    return all(_norm(k) in rendered_norm for k in fact.keys)


@dataclass
class RetentionRow:
    session: str
    family: str
    preset: str
    budget: int
    kept: dict[str, bool] = field(default_factory=dict)
    valid: bool = True
    within_budget: bool = True
    tokens_out: int = 0
    facts_tokens: int = 0
    instructions_tokens: int = 0
    error: str | None = None

    @property
    def n_kept(self) -> int:
        return sum(self.kept.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "session": self.session, "family": self.family, "preset": self.preset, "budget": self.budget,
            "kept": self.n_kept, "of": len(self.kept), "facts": self.kept, "valid": self.valid,
            "within_budget": self.within_budget, "tokens_out": self.tokens_out,
            "facts_tokens": self.facts_tokens, "instructions_tokens": self.instructions_tokens, "error": self.error,
        }  # fmt: skip


def evaluate(session: RetentionSession, preset: Any, budget: int, history: Any, strategy: Any = None) -> RetentionRow:
    """Build the next request's context for ``session`` with ``preset`` at ``budget`` tokens.

    ``history`` is the session's :class:`~ctxmem.context.History` (counted once by the
    caller and shared across presets); ``strategy`` is the preset's strategy instance, reused
    across budgets the way an agent reuses it across turns (its per-history indexes are
    built once). The context is checked for provider validity and, independently
    recounted, for the budget.
    """
    from ctxmem.context import BuildRequest, check_output
    from ctxmem.errors import ContextOverflowError
    from ctxmem.messages import message_texts
    from ctxmem.tokens import count_messages
    from ctxmem.tokens.counting import DEFAULT_OVERHEAD

    row = RetentionRow(session.name, session.family, preset.name, budget)
    b = preset.budget(budget)
    try:
        strategy = strategy if strategy is not None else preset.strategy()
        built = strategy.build(BuildRequest(history, b, pinned=preset.model.pinned, record=False))
    except ContextOverflowError as exc:
        row.error = f"overflow: {exc}"
        row.kept = {f.kind: False for f in session.facts}
        return row
    try:
        check_output(built.messages)
    except Exception as exc:  # any validation failure is a defect the row reports
        row.valid = False
        row.error = f"invalid: {exc}"
    recount = DEFAULT_OVERHEAD.per_request + sum(c.total for c in count_messages(list(built.messages), history.tokenizer))
    tools = getattr(built, "extra_tools", ())
    if tools:
        from ctxmem.messages import tool_to_anthropic
        from ctxmem.tokens import count_tools

        recount += count_tools([tool_to_anthropic(t) for t in tools], history.tokenizer).total
    row.tokens_out = recount
    row.within_budget = recount <= b.available
    rendered = _norm("\n".join(t for m in built.messages for t in message_texts(m)))
    row.kept = {f.kind: kept(f, rendered) for f in session.facts}
    sec = built.report.sections
    row.facts_tokens = int(sec.get("facts", 0))
    row.instructions_tokens = int(sec.get("instructions", 0))
    return row


def presets_in(directory: Any) -> list[Any]:
    from pathlib import Path

    from ctxmem.config import load_preset

    return [load_preset(str(p)) for p in sorted(Path(directory).glob("*.toml"))]


def compacting(preset: Any) -> bool:
    """A preset that compacts (everything but a dump that raises)."""
    return not (preset.type == "dump" and preset.model.params.get("on_overflow", "raise") == "raise")


def run_grid(
    sessions_: Sequence[RetentionSession], presets: Sequence[Any], budgets: Sequence[int], tokenizer: str = "o200k_base",
    progress: Callable[[RetentionRow], None] | None = None,
) -> list[RetentionRow]:
    from ctxmem.context import History

    rows = []
    for s in sessions_:
        h = History.from_messages(s.messages, tokenizer)
        for p in presets:
            strategy = p.strategy()
            for budget in budgets:
                row = evaluate(s, p, budget, h, strategy)
                rows.append(row)
                if progress:
                    progress(row)
    return rows


__all__ = [
    "KINDS", "PlantedFact", "RetentionRow", "RetentionSession", "compacting", "evaluate", "generate",
    "kept", "presets_in", "run_grid", "sessions",
]  # fmt: skip
