"""Running a grid: resume, response cache, bounded concurrency, rate limit, cost cap.

:func:`run` (async) and :func:`run_sync` take cells, a reader per model, and a
:class:`~ctxmem.evals.store.ResultStore`:

1. every cell is resolved and keyed (:func:`~ctxmem.evals.cells.cell_key`); cells whose
   stored status is ``done`` or ``refused`` are skipped, ``error`` ones are retried
   (a cell that cannot fit the window or whose needles cannot be placed is ``refused``:
   it could never succeed with the same config); :func:`refusals` finds those up front;
2. :func:`estimate` prices the pending cells (prompt ≈ the cell's request tokens, output
   = ``max_tokens``) from a per-model price table (``prices=`` in $/MTok, else
   :mod:`ctxmem.tune.prices` when it knows the model; offline readers cost 0); the CLI
   shows it before anything runs;
3. cells run concurrently, at most ``concurrency`` requests in flight (an
   ``asyncio.Semaphore``) and at most ``rate`` request starts per second; building a cell
   and the SQLite writes run off the event loop;
4. each request is looked up in the response cache first (keyed by the reader's model and
   a hash of the canonical request); a miss is sent and cached;
5. the **budget cap**: before a request is sent, its estimated cost is reserved against
   ``budget_usd``; if the reservation would pass the cap, nothing more is started and the
   run ends with ``stopped_by_budget``. Actual costs (from the response's ``Usage``)
   replace the estimates as answers arrive. The LLM judge (``judge=``) is a request too:
   its estimate is reserved with the reader's, its actual cost settled when it answers and
   added to the cell's ``cost`` (``info["judge"]`` keeps its model, usage and dollars). A
   cap with an unpriced reader or judge is refused up front: it could not be enforced.
6. each finished cell is written at once (a killed run keeps its finished cells); its
   row carries the answer, score, rule scores, optional judge verdict, survival, fate,
   label, tokens, usage and cost (the reader's and the judge's dollars).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ctxmem.clients.base import Usage
from ctxmem.errors import ConfigError, CtxmemError
from ctxmem.evals.attribution import label
from ctxmem.evals.cells import BuiltCell, Cell, CellRefusedError, build_cell, cell_key, resolve
from ctxmem.evals.haystack import NeedleUnplaceableError
from ctxmem.evals.readers import blind_families
from ctxmem.evals.scoring import LLMJudge, score_needles
from ctxmem.evals.store import ResultStore
from ctxmem.messages import canonical_json, to_anthropic

if TYPE_CHECKING:
    from ctxmem.tune.prices import Price, Rates

Progress = Callable[[int, int, str], None]
"""``progress(done, total, status)`` after each finished cell."""

OFFLINE_PREFIXES = ("extractive", "scripted", "function")


@dataclass(frozen=True)
class ModelPrice:
    """Dollars per million tokens of one reader (or judge).

    A request is billed like ``ctxmem tune cost`` bills it (:class:`ctxmem.tune.prices.Rates`):
    uncached input at ``input``, cache reads at ``cache_read``, cache writes at
    ``cache_write`` (either one ``None``: the input price), output at ``output``. ``table``
    is the :mod:`ctxmem.tune.prices` entry the price came from, when it did: its rates (the
    long-context tier included) then apply.
    """

    input: float
    output: float
    cache_read: float | None = None
    cache_write: float | None = None
    table: Price | None = None

    def rates(self, prompt_tokens: int) -> Rates:
        """The rates for a request of ``prompt_tokens`` (all of the prompt, cached or not)."""
        from ctxmem.tune.prices import Rates

        if self.table is not None:
            return self.table.rates(prompt_tokens)
        return Rates(input=self.input, output=self.output,
                     cache_write=self.input if self.cache_write is None else self.cache_write,
                     cache_read=self.input if self.cache_read is None else self.cache_read)

    def dollars(self, usage: Usage) -> float:
        return self.rates(usage.prompt_tokens).dollars(
            uncached=usage.input_tokens, written=usage.cache_write_tokens, read=usage.cache_read_tokens,
            output=usage.output_tokens)


def price_for(model: str, prices: Mapping[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The price of a reader: ``prices`` first, then ctxmem's price table; None if unknown."""
    if prices and model in prices:
        return prices[model]
    if model.startswith(OFFLINE_PREFIXES):
        return ModelPrice(0.0, 0.0)
    name = model.partition(":")[2] or model
    if prices and name in prices:
        return prices[name]
    try:
        from ctxmem.tune.prices import load_prices

        table = load_prices(user=True)
        if name in table:
            entry = table.get(name)
            p = entry.model
            return ModelPrice(p.input, p.output, p.cache_read, p.cache_write, table=entry)
    except (ImportError, CtxmemError):
        pass
    return None


@dataclass
class Estimate:
    cells: int
    prompt_tokens: int
    output_tokens: int
    dollars: float
    unpriced: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"cells": self.cells, "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "dollars": round(self.dollars, 6), "unpriced_models": self.unpriced}


def _prompt_estimate(cell: Cell) -> int:
    n = cell.length
    if cell.preset != "none":
        from ctxmem.config import load_preset

        n = min(n, load_preset(cell.preset).budget().available)
    return n if cell.needle != "nocontext" else 64


#: the judge prompt's fixed part (instructions and labels) in tokens, rounded up
JUDGE_PROMPT_TOKENS = 160


def judge_usage_estimate(cell: Cell, judge_max_tokens: int = 8) -> Usage:
    """What one judge request for ``cell`` is reserved as: the prompt, the question and
    answers (a few dozen tokens) and the reader's answer at its ``max_tokens``; a verdict out."""
    return Usage(JUDGE_PROMPT_TOKENS + 64 + cell.max_tokens, judge_max_tokens)


def estimate(
    cells: Sequence[Cell],
    prices: Mapping[str, ModelPrice] | None = None,
    *,
    judge: str | None = None,
    judge_max_tokens: int = 8,
) -> Estimate:
    """What the cells would cost (see the module docstring); ``judge``: the judge model's
    name, whose request per cell is counted too."""
    prompt = output = 0
    dollars = 0.0
    unpriced: set[str] = set()
    jp = price_for(judge, prices) if judge is not None else None
    if judge is not None and jp is None and cells:
        unpriced.add(judge)
    for c in cells:
        p_tok = _prompt_estimate(c)
        prompt += p_tok
        output += c.max_tokens
        p = price_for(c.model, prices)
        if p is None:
            unpriced.add(c.model)
        else:
            dollars += p.dollars(Usage(p_tok, c.max_tokens))
        if judge is not None:
            ju = judge_usage_estimate(c, judge_max_tokens)
            prompt += ju.prompt_tokens
            output += ju.output_tokens
            if jp is not None:
                dollars += jp.dollars(ju)
    return Estimate(len(cells), prompt, output, dollars, sorted(unpriced))


def judge_model(judge: LLMJudge | None) -> str | None:
    """The model name a judge is priced by (its client's ``model``), None without a judge."""
    if judge is None:
        return None
    return str(getattr(judge.client, "model", None) or judge.id.removeprefix("judge:"))


def plan(
    cells: Sequence[Cell], store: ResultStore, prices: Mapping[str, ModelPrice] | None = None,
    *, judge: str | None = None,
) -> tuple[list[tuple[str, Cell, dict[str, Any]]], int, Estimate]:
    """(pending cells with keys and resolved configs, cells already finished, cost estimate;
    ``judge``: the judge model's name, priced too)."""
    resolved: dict[str, tuple[Cell, dict[str, Any]]] = {}
    for c in cells:
        r = resolve(c)
        resolved.setdefault(cell_key(r), (c, r))
    statuses = store.statuses(list(resolved))
    pending = [(k, c, r) for k, (c, r) in resolved.items() if statuses.get(k) not in ("done", "refused")]
    return pending, len(resolved) - len(pending), estimate([c for _, c, _ in pending], prices, judge=judge)


def refusals(pending: Sequence[tuple[str, Cell, dict[str, Any]]]) -> list[tuple[Cell, str]]:
    """The pending cells that will be refused, with the reason: each is built (no reader is
    called), so the answer is exact — a window overflow or needles that cannot be placed."""
    out: list[tuple[Cell, str]] = []
    for _key, c, _res in pending:
        try:
            build_cell(c)
        except (CellRefusedError, NeedleUnplaceableError) as exc:
            out.append((c, str(exc)))
    return out


class RateLimiter:
    """At most ``rate`` starts per second, spaced evenly (None: unlimited)."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class RunSummary:
    run_id: str
    total: int
    skipped: int = 0
    done: int = 0
    refused: int = 0
    errors: int = 0
    not_started: int = 0
    cached: int = 0
    dollars: float = 0.0
    stopped_by_budget: bool = False
    estimate: dict[str, Any] = field(default_factory=dict)
    error_messages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def request_hash(built: BuiltCell) -> str:
    payload = canonical_json({"system": built.system, "messages": to_anthropic(built.messages),
                              "max_tokens": built.cell.max_tokens})
    return hashlib.sha256(payload.encode()).hexdigest()


class _Budget:
    def __init__(self, cap: float | None):
        self.cap = cap
        self.spent = 0.0
        self.reserved = 0.0
        self.stopped = False

    def reserve(self, amount: float) -> bool:
        if self.cap is None:
            return True
        if self.stopped or self.spent + self.reserved + amount > self.cap:
            self.stopped = True
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved if self.cap is not None else 0.0
        self.spent += actual


async def run(
    cells: Sequence[Cell],
    readers: Mapping[str, Any] | Callable[[str], Any],
    store: ResultStore,
    *,
    concurrency: int = 4,
    rate: float | None = None,
    budget_usd: float | None = None,
    prices: Mapping[str, ModelPrice] | None = None,
    judge: LLMJudge | None = None,
    progress: Progress | None = None,
    grid: Mapping[str, Any] | None = None,
) -> RunSummary:
    """Run every cell not already finished in ``store`` (see the module docstring)."""
    if concurrency < 1:
        raise ConfigError("must be at least 1", field="concurrency")
    jmodel = judge_model(judge)
    jmax = int(getattr(judge, "max_tokens", 8) or 8)
    pending, skipped, est = await asyncio.to_thread(lambda: plan(cells, store, prices, judge=jmodel))
    run_id = uuid.uuid4().hex
    summary = RunSummary(run_id, len(pending) + skipped, skipped=skipped, estimate=est.to_json())
    jprice = price_for(jmodel, prices) if jmodel is not None else None
    unpriced = list(est.unpriced)
    if jmodel is not None and jprice is None and jmodel not in unpriced:
        unpriced.append(jmodel)  # the judge is refused up front even when no cell is pending
    if budget_usd is not None and unpriced:
        what = ", ".join(f"{m} (the judge)" if m == jmodel else m for m in unpriced)
        raise ConfigError(
            f"no price for {what}: a budget cap cannot be enforced. "
            "Add the model to the price table (ctxmem.tune.prices) or pass prices=",
            field="budget",
        )
    judging = _Judging(judge, jmodel, jprice, jmax) if judge is not None and jmodel is not None else None
    await asyncio.to_thread(store.start_run, run_id, dict(grid or {"cells": summary.total}))
    sem = asyncio.Semaphore(concurrency)
    limiter = RateLimiter(rate)
    budget = _Budget(budget_usd)
    reader_cache: dict[str, Any] = {}
    finished = 0

    def reader_for(model: str) -> Any:
        if model not in reader_cache:
            reader_cache[model] = readers[model] if isinstance(readers, Mapping) else readers(model)
        return reader_cache[model]

    deferred: list[tuple[str, Cell, dict[str, Any]]] = []  # claimed by another worker when we got there
    claim_sem = asyncio.Semaphore(concurrency)  # claim a cell only when a slot is free to run it

    async def one(key: str, cell: Cell, res: dict[str, Any]) -> None:
        async with claim_sem:
            if not await asyncio.to_thread(store.claim, key, run_id):
                deferred.append((key, cell, res))
                return
            await claimed(key, cell, res)

    async def claimed(key: str, cell: Cell, res: dict[str, Any]) -> None:
        nonlocal finished
        t0 = time.perf_counter()
        base = {"key": key, "run_id": run_id, "source": cell.source, "length": cell.length, "depth": cell.depth,
                "needle": cell.needle, "preset": cell.preset, "model": cell.model, "seed": cell.seed,
                "tokenizer": cell.tokenizer, "cell": cell.to_json(), "resolved": res}
        status = "error"
        try:
            row = await _evaluate(cell, base, reader_for, store, sem, limiter, budget, prices, judging)
            if row is None:
                summary.not_started += 1
                return
            status = row["status"]
            summary.cached += int(row.get("cached") or 0)
        except CellRefusedError as exc:
            status = "refused"
            row = {**base, "status": "refused", "label": "refused", "error": str(exc),
                   "info": {"needed": exc.needed, "available": exc.available}}
        except NeedleUnplaceableError as exc:  # permanent for this config: refused, not retried
            status = "refused"
            row = {**base, "status": "refused", "label": "refused", "error": str(exc), "info": {"unplaceable": True}}
        except Exception as exc:  # one failing cell must not lose the others
            row = {**base, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
            summary.error_messages.append(f"{cell.source}/{cell.length}/{cell.depth}/{cell.needle}: {row['error']}")
        row["elapsed_s"] = time.perf_counter() - t0
        await asyncio.to_thread(store.put, row)
        if status == "done":
            summary.done += 1
        elif status == "refused":
            summary.refused += 1
        else:
            summary.errors += 1
        summary.dollars += float(row.get("cost") or 0.0)  # the reader's and the judge's
        finished += 1
        if progress is not None:
            progress(finished, len(pending), status)

    async def heartbeat() -> None:  # keep our claims' leases alive while we work
        while True:
            await asyncio.sleep(store.lease_s / 3)
            await asyncio.to_thread(store.renew, run_id)

    beat = asyncio.create_task(heartbeat())
    try:
        await asyncio.gather(*(one(k, c, r) for k, c, r in pending))
        # Cells another worker held: wait until it finishes them or its lease lapses (it died).
        while deferred and not budget.stopped:
            keys = [k for k, _, _ in deferred]
            statuses = await asyncio.to_thread(store.statuses, keys)
            held = await asyncio.to_thread(store.claims, keys)
            # not finished, or an errored cell another worker is retrying now
            todo = [d for d in deferred if statuses.get(d[0]) is None or (statuses[d[0]] == "error" and d[0] in held)]
            summary.skipped += len(deferred) - len(todo)
            deferred.clear()
            live = [left for k, (_, left) in held.items() if left > 0 and any(k == d[0] for d in todo)]
            if live:
                await asyncio.sleep(min(min(live) + 0.05, store.lease_s / 3))
            await asyncio.gather(*(one(k, c, r) for k, c, r in todo))
    finally:
        beat.cancel()
        await asyncio.to_thread(store.release, run_id)
        summary.stopped_by_budget = budget.stopped
        await asyncio.to_thread(store.finish_run, run_id, summary.to_json())
    return summary


@dataclass(frozen=True)
class _Judging:
    """The run's judge with its model name and price (None: unpriced)."""

    judge: LLMJudge
    model: str
    price: ModelPrice | None
    max_tokens: int


async def _evaluate(
    cell: Cell,
    base: dict[str, Any],
    reader_for: Callable[[str], Any],
    store: ResultStore,
    sem: asyncio.Semaphore,
    limiter: RateLimiter,
    budget: _Budget,
    prices: Mapping[str, ModelPrice] | None,
    judging: _Judging | None,
) -> dict[str, Any] | None:
    built = await asyncio.to_thread(build_cell, cell)
    reader = reader_for(cell.model)
    model_id = str(getattr(reader, "model", cell.model))
    rh = request_hash(built)
    hit = await asyncio.to_thread(store.cached_response, model_id, rh)
    price = price_for(cell.model, prices)
    cached = hit is not None
    # The judge's request is reserved with the reader's: a cell is never answered and then
    # left unjudged because the cap ran out in between.
    j_reserve = (judging.price.dollars(judge_usage_estimate(cell, judging.max_tokens))
                 if judging is not None and judging.price is not None else 0.0)
    if hit is not None:
        text, usage_d = hit
        usage = Usage(**usage_d)
        cost = 0.0  # already paid when it was cached
        if judging is not None and not budget.reserve(j_reserve):
            return None
    else:
        reserve = price.dollars(Usage(built.request_tokens, cell.max_tokens)) if price else 0.0
        if not budget.reserve(reserve + j_reserve):
            return None
        try:
            async with sem:
                await limiter.wait()
                resp = await reader.request(built.messages, system=built.system, max_tokens=cell.max_tokens,
                                            temperature=0.0)
        except BaseException:
            budget.settle(reserve + j_reserve, 0.0)
            raise
        text, usage = resp.text, resp.usage
        cost = price.dollars(usage) if price else 0.0
        budget.settle(reserve, cost)
        await asyncio.to_thread(store.cache_response, model_id, rh, text, usage.to_dict())
    s = score_needles(built.needles, text)
    verdict: int | None = None
    judge_info: dict[str, Any] | None = None
    judge_cost: float | None = None
    if judging is not None:
        try:
            async with sem:
                await limiter.wait()
                ok, j_usage = await judging.judge.judge(built.needles.question, built.needles.answers, text)
        except BaseException:
            budget.settle(j_reserve, 0.0)
            raise
        j_usage = j_usage if isinstance(j_usage, Usage) else Usage()
        judge_cost = judging.price.dollars(j_usage) if judging.price is not None else None
        budget.settle(j_reserve, judge_cost or 0.0)
        verdict = int(ok)
        judge_info = {"model": judging.model, "usage": j_usage.to_dict(),
                      "cost": None if judge_cost is None else round(judge_cost, 9)}
    # the cell's dollars: the reader's and the judge's (NULL only when neither is priced)
    total: float | None = None
    if price is not None or judge_cost is not None:
        total = (cost if price is not None else 0.0) + (judge_cost or 0.0)
    return {
        **base,
        "status": "done",
        "response": text,
        "score": s.score,
        "correct": int(s.correct),
        "survival": built.survival,
        "fate": built.fate,
        "label": label(s.correct, built.survival, built.fate,
                       reader_blind=cell.needle in blind_families(cell.model)),
        "rules": {**s.rules, "chose_distractor": s.chose_distractor},
        "judge": verdict,
        "info": {**built.info(), "answers": list(built.needles.answers), "question": built.needles.question,
                 **({"judge": judge_info} if judge_info is not None else {})},
        "usage": usage.to_dict(),
        "cost": total,
        "cached": int(cached),
    }


def run_sync(*args: Any, **kwargs: Any) -> RunSummary:
    """Sync wrapper of :func:`run` for the CLI and scripts."""
    return asyncio.run(run(*args, **kwargs))
