"""The scripted kernel-optimization policy: deterministic from a seed, four memory modes.

The policy plays the agent of DESIGN.md §4 against :class:`~ctxmem.workloads.kernel.KernelTools`:

1. **Orientation** — list and read the files (HARNESS.md, the kernel, the reference), the
   git log, a first ``compile``/``check``/``benchmark``/``profile``, and three probing
   compiles that reveal the device's limits (a deep pipeline that runs out of shared
   memory, a large tile that spills registers, wide K/V tiles over a small query tile that
   meet the spill cliff where the device has one).
2. **Redesign rounds** over the ladder of ``variants/`` (``baseline`` tuning,
   ``unified_loop``, ``head_packing``, ``split_kv``, ``persistent_grid``, ``combined``,
   ``dispatch``, then refinement of the best design). A round: read the kernel, write the rung's real
   Triton code into ``kernel.py`` with a literal ``CONFIG`` dict (or edit that ``CONFIG``
   line when the file already holds the rung), sometimes a restructuring edit that carries
   a catalog bug that applies to that code (:mod:`.bugs`), a compile/fix loop, a
   correctness loop (failing ``check`` → read, diff, diagnose, fix, re-check), a config
   search (``autotune`` over sub-spaces, ``benchmark`` of the best and of explored
   candidates — at full scale each one first passes a real ``check`` with its config, so
   every timing it acts on is of a kernel known correct — and ``check`` of the winner with
   its config), a ``profile``, then ``git_commit``
   on progress or ``git_checkout`` of the best commit otherwise. Five rounds without
   progress since the last design not tried before end the run (a planned new rung is
   always tried: the full ladder's persistent and combined rounds may not beat split-KV,
   and the dispatch rung after them does); it ends with ``submit``.

**Memory modes.** Every decision that depends on the past reads a :class:`Knowledge`
parsed from text — never from hidden state:

``oracle``      every tool result and every reasoning note so far;
``amnesic-K``   only the last K turns (tool results and the notes of those turns);
``context``     only the messages the context strategy rendered this turn (the runner
                passes them to :meth:`ScriptedPolicy.step`), parsed the same way;
``quitter``     oracle memory, but it stops after its first redesign round.

What the policy carries between turns regardless of mode is only its *intent* (which
round, which step) and the outcome of the call it just made — like an agent that reads
the last tool result. What it can forget: the shared-memory limit (→ configs over the
limit, ``OutOfResources`` again), configs it already measured (→ repeated evaluations),
bugs it already diagnosed (→ the same bug written again), and the best speedup and commit
(→ a regression committed as "progress", a wrong revert). That is how a strategy that
forgets shows up in the scores without an LLM.

The seeded schedule (which bug a restructuring edit carries, which candidates a search
explores) is drawn from ``random.Random(f"ctxmem-policy:{seed}:...")`` independently of the
mode, so two modes differ only in what they remember. Correctness is always real: every
``check`` runs the kernel in the Triton interpreter; identical (source, config) checks are
answered from the checker's cache, so per-check cost stays near one second.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.workloads.kernel.bugs import ALL_BUGS, BUGS, CATALOG, VARIANT_BUGS, Bug
from ctxmem.workloads.kernel.simx import (
    CONFIG_SPACE,
    SIMX_DEFAULTS,
    InvalidConfig,
    normalize_config,
)
from ctxmem.workloads.kernel.variants import RUNG_KEYS, rung_source

Scale = Literal["small", "full"]
EVAL_TOOLS: frozenset[str] = frozenset({"compile", "check", "benchmark", "autotune", "profile", "submit"})
ConfigKey = tuple[str, tuple[tuple[str, int], ...]]  # (code sha, sorted normalized config)
IMPORT_ANCHOR = "import triton.language as tl\n"
BASE_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
# Pack a whole GQA group to start (4 or 8 query heads on the benchmark shapes; the rungs'
# launch clamps PACK to the largest power of two that divides the group).
POLICY_DEFAULTS: dict[str, int] = {**SIMX_DEFAULTS, "PACK": 8, "SPLITS": 4, "PROGRAMS": 256}


def arch_keys(arch: str) -> tuple[str, ...]:
    """The launch keys the rung's code reads."""
    return BASE_KEYS + RUNG_KEYS[arch]

DESIGN_NOTES: dict[str, str] = {
    "baseline": "two loops (gathered prefix, then new tokens), one program per (tile, request, head)",
    "unified_loop": "one pipelined loop over prefix and new keys",
    "head_packing": "the PACK query heads of a GQA group share one tile",
    "split_kv": "SPLITS programs share a long key range, then a reduce",
    "persistent_grid": "one program per slot, looping over a tile queue",
    "combined": "split-KV inside a persistent grid",
    "dispatch": "the launch picks tile rows, split and scratch per batch shape",
}


def parse_mode(mode: str) -> tuple[str, int]:
    """``"amnesic-8"`` → ``("amnesic", 8)``; other modes get K = 0."""
    if mode.startswith("amnesic"):
        _, _, k = mode.partition("-")
        if not k.isdigit() or int(k) < 1:
            raise ValueError(f"amnesic mode needs a positive K, e.g. amnesic-8 (got {mode!r})")
        return "amnesic", int(k)
    if mode not in ("oracle", "context", "quitter"):
        raise ValueError(f"unknown mode {mode!r}; expected oracle, amnesic-K, context or quitter")
    return mode, 0


def config_key(code: str, config: Mapping[str, Any]) -> ConfigKey | None:
    """The identity of a measured launch config: the code's sha (from a tool header, or a
    rung name before the code is known) and the normalized config (None if SIMX rejects it)."""
    try:
        cfg, _ = normalize_config(config)
    except InvalidConfig:
        return None
    return code, tuple(sorted((k, int(v)) for k, v in cfg.items()))


def _kv(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"\b(\w+)=(\d+)\b", text)}


# -- knowledge: what can be read back from text ------------------------------------------

_HEADER = re.compile(r"\b(bench|prof|compile)(?:#\d+)? · \S+ \(sha (\w+)\) · ((?:\w+=\d+ ?)+)")
_TUNE = re.compile(r"\btune#\d+ · \S+ \(sha (\w+)\) · \d+ configs over base ((?:\w+=\d+ ?)+)")
_SHA = re.compile(r"\(sha (\w+)\)")
_TUNE_ROW = re.compile(r"^\s*\d+\s+((?:\w+=\d+ )+)\s*(?:[\d.]+ us total\s+([\d.]+)x geomean|out of resource)", re.M)
_GEOMEAN = re.compile(r"geomean speedup (\d+\.\d+)x")
_LIMIT = re.compile(r"out of resource: shared memory, Required: (\d+), Hardware limit: (\d+)")
_ROOT = re.compile(r"Root cause(?: of eval#\d+)?: ([a-z_]+)")
_COMMIT = re.compile(r"\[main ([0-9a-f]{7})\] [^\n]*?(\d+\.\d+)x")
_LOG = re.compile(r"^([0-9a-f]{7}) [^\n]*?(\d+\.\d+)x", re.M)
_DEVICE = re.compile(r"device: (\S+) · simulated")


@dataclass
class Facts:
    """What one text says (cached per text: the same string is parsed once)."""

    smem_limit: int | None = None
    measured: dict[ConfigKey, float] = field(default_factory=dict)
    over_limit: set[ConfigKey] = field(default_factory=set)
    benched: set[ConfigKey] = field(default_factory=set)
    bugs: set[str] = field(default_factory=set)
    commits: dict[str, float] = field(default_factory=dict)
    device: str | None = None


def parse_facts(text: str) -> Facts:
    f = Facts()
    m = _DEVICE.search(text)
    if m:
        f.device = m.group(1)
    limits = _LIMIT.findall(text)
    if limits:
        f.smem_limit = int(limits[-1][1])
    f.bugs.update(b for b in _ROOT.findall(text) if b in ALL_BUGS)
    for sha, x in _COMMIT.findall(text):
        f.commits[sha] = float(x)
    for sha, x in _LOG.findall(text):
        f.commits.setdefault(sha, float(x))
    t = _TUNE.search(text)
    if t:
        code, base = t.group(1), _kv(t.group(2))
        for row in _TUNE_ROW.finditer(text):
            key = config_key(code, {**base, **_kv(row.group(1))})
            if key is None:
                continue
            if row.group(2):
                f.measured[key] = float(row.group(2))
            else:
                f.over_limit.add(key)
        return f
    h = _HEADER.search(text)
    if h:
        key = config_key(h.group(2), _kv(h.group(3)))
        if key is not None:
            if limits:
                f.over_limit.add(key)
            elif h.group(1) == "bench":
                g = _GEOMEAN.search(text)
                if g:
                    f.measured[key] = float(g.group(1))
                    f.benched.add(key)
    return f


@dataclass
class Knowledge:
    """The union of the facts of some texts: what the policy can act on this turn."""

    smem_limit: int | None = None
    measured: dict[ConfigKey, float] = field(default_factory=dict)
    over_limit: set[ConfigKey] = field(default_factory=set)
    benched: set[ConfigKey] = field(default_factory=set)
    bugs: set[str] = field(default_factory=set)
    commits: dict[str, float] = field(default_factory=dict)
    device: str | None = None

    def add(self, f: Facts) -> None:
        if f.smem_limit is not None:
            self.smem_limit = f.smem_limit
        self.measured.update(f.measured)
        self.over_limit |= f.over_limit
        self.benched |= f.benched
        self.bugs |= f.bugs
        self.commits.update(f.commits)
        self.device = f.device or self.device

    @property
    def best_commit(self) -> tuple[str, float] | None:
        if not self.commits:
            return None
        sha = max(self.commits, key=lambda s: (self.commits[s], s))
        return sha, self.commits[sha]

    def best_measured(self, arch: str | None = None) -> tuple[ConfigKey, float] | None:
        items = [(k, v) for k, v in self.measured.items() if arch is None or k[0] == arch]
        if not items:
            return None
        return max(items, key=lambda kv: (kv[1], kv[0]))


class FactCache:
    """Parses each distinct text once (the same history strings come back every turn)."""

    def __init__(self) -> None:
        self._cache: dict[str, Facts] = {}

    def facts(self, text: str) -> Facts:
        f = self._cache.get(text)
        if f is None:
            f = self._cache[text] = parse_facts(text)
        return f

    def knowledge(self, texts: Iterable[str]) -> Knowledge:
        k = Knowledge()
        for t in texts:
            k.add(self.facts(t))
        return k


def message_texts(messages: Sequence[Message]) -> list[str]:
    """Every text a model would read in these messages: text blocks and tool results."""
    out: list[str] = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock | ToolResultBlock):
                out.append(b.text)
    return out


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One assistant turn: a short reasoning note and one tool call."""

    text: str
    tool: str
    input: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    text: str
    is_error: bool


@dataclass(frozen=True)
class ScaleParams:
    ladder: tuple[tuple[str, int], ...]  # (arch, rounds on it)
    autotunes: int  # per round
    autotune_size: int  # at most this many configs per autotune
    explore: int  # extra benchmarks of candidates per round
    confirm: int  # benchmarks of the autotune's best configs per round
    profiles: int  # per round
    max_refinement: int  # refinement rounds after the ladder
    read_reference: bool
    bug_rate: float
    check_candidates: bool = False  # check every candidate (with its config) before benchmarking it


SCALES: dict[str, ScaleParams] = {
    "small": ScaleParams(ladder=(("baseline", 1), ("unified_loop", 1), ("head_packing", 1), ("split_kv", 1),
                                 ("dispatch", 1)),
                         autotunes=2, autotune_size=24, explore=2, confirm=1, profiles=1,
                         max_refinement=0, read_reference=False, bug_rate=0.6),
    "full": ScaleParams(ladder=(("baseline", 2), ("unified_loop", 2), ("head_packing", 3), ("split_kv", 3),
                                ("persistent_grid", 2), ("combined", 3), ("dispatch", 2)),
                        autotunes=4, autotune_size=64, explore=20, confirm=6, profiles=4,
                        max_refinement=14, read_reference=True, bug_rate=0.5, check_candidates=True),
}
SUBSPACES: tuple[tuple[str, ...], ...] = (
    ("BLOCK_M", "BLOCK_N", "num_stages"), ("num_warps", "num_stages", "BLOCK_M"),
    ("PACK", "BLOCK_M", "num_stages"), ("SPLITS", "BLOCK_N", "num_stages"), ("BLOCK_M", "BLOCK_N", "num_warps"),
    ("PACK", "SPLITS", "BLOCK_N"), ("PROGRAMS", "PACK", "num_stages"),
)
PROFILE_SHAPES: tuple[str, ...] = ("mixed_extend", "spec_decode", "long_context", "prefill_2k")


class ScriptedPolicy:
    """See the module docstring. Drive it with :meth:`step` / :meth:`observe`."""

    def __init__(self, seed: int, mode: str = "oracle", *, scale: Scale = "small"):
        self.seed = seed
        self.mode, self.k = parse_mode(mode)
        self.scale = SCALES[scale]
        self._code: dict[str, str] = {}  # rung -> the sha tools print for the code I wrote for it
        self._written: str | None = None  # which rung's code kernel.py holds, as far as I know
        self._facts = FactCache()
        self._oracle = Knowledge()
        self._turns: list[tuple[str, str]] = []  # (reasoning, tool output) per turn
        self._view: Sequence[Message] | None = None
        self._pending: Outcome | None = None
        self._gen = self._script()
        self._started = False
        self._done = False
        self.rounds = 0
        self.rounds_without_progress = 0
        self.bugs_introduced: list[tuple[int, str]] = []  # (round, bug) — ground truth for scores
        self._finishing = False

    # -- driving ---------------------------------------------------------------------------

    @property
    def needs_view(self) -> bool:
        return self.mode == "context"

    def step(self, view: Sequence[Message] | None = None) -> Action | None:
        """The next action, deciding from ``view`` in context mode; None when finished."""
        if self._done:
            return None
        self._view = view
        try:
            action = next(self._gen) if not self._started or self._pending is None else self._gen.send(self._pending)
        except StopIteration:
            self._done = True
            return None
        self._started = True
        return action

    def finish_now(self) -> None:
        """Skip to the end (restore the best commit, submit): the call budget is nearly spent."""
        if not self._done and not self._finishing:
            self._gen.close()
            self._gen = self._finish()
            self._started = False

    def observe(self, action: Action, text: str, is_error: bool) -> None:
        self._pending = Outcome(text, is_error)
        self._turns.append((action.text, text))
        self._oracle.add(self._facts.facts(action.text))
        self._oracle.add(self._facts.facts(text))

    def know(self) -> Knowledge:
        """What the policy can act on now (see the memory modes)."""
        if self.mode in ("oracle", "quitter"):
            return self._oracle
        if self.mode == "amnesic":
            return self._facts.knowledge(t for pair in self._turns[-self.k:] for t in pair)
        if self._view is None:
            return Knowledge()
        return self._facts.knowledge(message_texts(self._view))

    # -- helpers ---------------------------------------------------------------------------

    def _rng(self, *parts: object) -> random.Random:
        return random.Random("ctxmem-policy:" + ":".join(str(p) for p in (self.seed, *parts)))

    def code(self, arch: str) -> str:
        """The identity of the rung's code in tool output (its sha once a tool printed it)."""
        return self._code.get(arch, arch)

    def _learn_code(self, arch: str, text: str) -> None:
        m = _SHA.search(text)
        if m and not text.startswith("error"):
            self._code[arch] = m.group(1)

    @staticmethod
    def _smem(cfg: Mapping[str, int]) -> int:
        # My own estimate for head_dim 128: Q and P tiles once, K and V tiles per stage.
        bm, bn, stages = cfg.get("BLOCK_M", 32), cfg.get("BLOCK_N", 32), cfg.get("num_stages", 1)
        return (bm * 128 + bm * bn + 2 * stages * bn * 128) * 2

    def _fits(self, arch: str, cfg: Mapping[str, int], know: Knowledge) -> bool:
        key = config_key(self.code(arch), cfg)
        if key is not None and key in know.over_limit:
            return False
        return know.smem_limit is None or self._smem(cfg) <= know.smem_limit

    def _candidates(self, arch: str) -> list[dict[str, int]]:
        """The arch's config space in a seeded order shared by every round on this arch."""
        keys = arch_keys(arch)
        space = [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(CONFIG_SPACE[k] for k in keys))]
        space = [c for c in space if c.get("PACK", 1) <= c["BLOCK_M"] and c["BLOCK_M"] >= 32 and c["BLOCK_N"] >= 32]
        self._rng("candidates", arch).shuffle(space)
        return space

    # -- the script ------------------------------------------------------------------------

    def _script(self) -> Generator[Action, Outcome, None]:
        yield from self._orientation()
        plan: list[str] = [arch for arch, n in self.scale.ladder for _ in range(n)]
        best_arch = "baseline"
        refinement = 0
        tried: set[str] = set()
        while True:
            if self.rounds < len(plan):
                arch = plan[self.rounds]
            elif refinement < self.scale.max_refinement:
                refinement += 1
                arch = best_arch
            else:
                break
            if arch not in tried:
                # A design not tried yet is a new direction, not more of a plateau: the
                # stop rule counts rounds without progress since the last new design.
                tried.add(arch)
                self.rounds_without_progress = 0
            progress = yield from self._round(arch)
            self.rounds += 1
            if progress:
                best_arch = arch
                self.rounds_without_progress = 0
            else:
                self.rounds_without_progress += 1
            if self.rounds_without_progress >= 5 or (self.mode == "quitter" and self.rounds >= 1):
                break
        yield from self._finish()

    def _orientation(self) -> Generator[Action, Outcome, None]:
        yield Action("Start by looking at what the workspace holds.", "list_files", {})
        yield Action("The harness rules first: interface, tolerances, what the target device is.",
                     "read_file", {"path": "HARNESS.md"})
        yield Action("Now the kernel itself, all of it.", "read_file", {"path": "kernel.py"})
        if self.scale.read_reference:
            yield Action("And the reference, to see exactly what must be computed.", "read_file",
                         {"path": "reference.py"})
        yield Action("History of the workspace so far.", "git_log", {})
        yield Action("Compile the unmodified kernel to see what the target reports.", "compile", {})
        yield Action("Correctness of the baseline, to know the suite and its tolerances.", "check", {})
        yield Action("Baseline speed on the target device.", "benchmark", {})
        yield Action("Profile the baseline on the mixed shape to see what limits it.", "profile", {})
        yield Action("Probe the shared-memory limit with a deep pipeline of wide K/V tiles.", "compile",
                     {"config": {"BLOCK_N": 128, "num_stages": 4}})
        yield Action("Probe the register file with a large tile at two warps.", "compile",
                     {"config": {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 2}})
        yield Action("Probe the K tile alone: wide K/V tiles with a small query tile, so registers are "
                     "not the limit.", "compile", {"config": {"BLOCK_M": 32, "BLOCK_N": 128, "num_warps": 4}})
        yield Action("Profile the decode-like shape: many short extends over long prefixes.", "profile",
                     {"shape": "spec_decode"})

    def _round(self, arch: str) -> Generator[Action, Outcome, bool]:
        r = self.rounds
        rng = self._rng("round", r)
        know = self.know()
        base_cfg = self._base_config(arch, know)
        out = yield Action(f"Round {r + 1}: work on the {arch} design ({DESIGN_NOTES[arch]}). "
                           "Read the current kernel first.", "read_file", {"path": "kernel.py"})
        self._written = _rung_of(out.text)  # what the file says, not what I remember
        if self.scale.read_reference:
            yield Action("Re-read the reference: what exactly must the new design preserve?", "read_file",
                         {"path": "reference.py"})
        yield from self._declare(arch, base_cfg)
        bug = self._draw_bug(rng, base_cfg, arch)  # a restructuring edit that may carry a catalog bug
        if bug is not None:
            self.bugs_introduced.append((r, bug.name))
            yield Action(f"Restructure the loop for {arch}: {DESIGN_NOTES[arch]}.", "edit_file",
                         {"path": "kernel.py", "old": bug.old, "new": bug.new})
        base_cfg = yield from self._compile_and_check(arch, bug, base_cfg)
        found: dict[ConfigKey, float] = {}
        subspaces = self._subspaces(arch, r)
        for i in range(self.scale.autotunes):
            space = self._space(arch, subspaces[i % len(subspaces)], base_cfg, self.know())
            if space is None:
                continue
            if self.scale.read_reference:
                yield Action(f"Before searching {' x '.join(space)}: re-read the kernel to see which "
                             "loops these parameters shape.", "read_file", {"path": "kernel.py"})
            out = yield Action(f"Autotune {' x '.join(space)} around {_cfg_text(base_cfg)}.", "autotune",
                               {"space": space, "config": base_cfg, "max_configs": 256})
            self._learn_code(arch, out.text)
            found.update(parse_facts(out.text).measured)
        ranked = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))
        for key, _ in ranked[: self.scale.confirm]:
            if key in self.know().benched:
                continue
            cfg = dict(key[1])
            if self.scale.check_candidates:
                out = yield Action(f"The autotuner likes {_cfg_text(cfg)}; its timings mean nothing unless the "
                                   "kernel is correct with it. Check it first.", "check", {"config": cfg})
                if "PASSED" not in out.text:
                    found.pop(key, None)
                    continue
            out = yield Action(f"Confirm the autotuner's pick {_cfg_text(cfg)} with a full benchmark.",
                               "benchmark", {"config": cfg})
            found.update(parse_facts(out.text).measured)
        explored = 0
        for cfg in self._candidates(arch):
            if explored >= self.scale.explore:
                break
            know = self.know()
            ckey = config_key(self.code(arch), cfg)
            if ckey is None or ckey in know.measured or ckey in found or not self._fits(arch, cfg, know):
                continue
            explored += 1
            if self.scale.check_candidates:
                out = yield Action(f"Candidate {_cfg_text(cfg)}: not measured yet as far as I can see. "
                                   "Correctness first, with this config.", "check", {"config": cfg})
                if "PASSED" not in out.text:
                    continue
            out = yield Action(f"Explore {_cfg_text(cfg)}: time it.", "benchmark", {"config": cfg})
            self._learn_code(arch, out.text)
            found.update(parse_facts(out.text).measured)
        if not found:
            return False
        win_key, win = max(found.items(), key=lambda kv: (kv[1], kv[0]))
        win_cfg = dict(win_key[1])
        out = yield Action(f"Check correctness with the winning config {_cfg_text(win_cfg)}.", "check",
                           {"config": win_cfg})
        if "PASSED" not in out.text:
            return False
        for shape in PROFILE_SHAPES[: self.scale.profiles]:
            yield Action(f"Profile {_cfg_text(win_cfg)} on {shape}: where does the time go now?", "profile",
                         {"config": win_cfg, "shape": shape})
        know = self.know()
        believed = know.best_commit[1] if know.best_commit else 1.0
        if win > believed * 1.005:
            yield from self._declare(arch, win_cfg, reason=f"Keep {_cfg_text(win_cfg)} as the default CONFIG.")
            yield Action("Re-check the kernel exactly as it will be committed.", "check", {})
            yield Action("Review the change before committing.", "git_diff", {})
            if self.scale.read_reference:
                yield Action("Re-read the whole kernel once more before the commit.", "read_file", {"path": "kernel.py"})
            yield Action(f"Progress: {win:.2f}x beats {believed:.2f}x. Commit.", "git_commit",
                         {"message": f"{arch}: {win:.2f}x geomean ({_cfg_text(win_cfg)})"})
            return True
        target = know.best_commit
        if target is None:
            out = yield Action(f"No progress ({win:.2f}x). Which commit was best? Look at the log.", "git_log",
                               {"max_count": 10})
            target = _knowledge_of(out.text).best_commit
        if target is not None:
            yield Action(f"No progress ({win:.2f}x vs {target[1]:.2f}x): restore the best commit {target[0]}.",
                         "git_checkout", {"rev": target[0]})
            self._written = None
        return False

    def _base_config(self, arch: str, know: Knowledge) -> dict[str, int]:
        got = know.best_measured(self.code(arch)) or know.best_measured()
        cfg: dict[str, int] = dict(got[0][1]) if got else dict(SIMX_DEFAULTS)
        cfg = {k: cfg.get(k, POLICY_DEFAULTS[k]) for k in arch_keys(arch)}
        if cfg.get("PACK") == 1:
            cfg["PACK"] = 8
        if cfg.get("SPLITS") == 1:
            cfg["SPLITS"] = 4
        if not self._fits(arch, cfg, know):
            cfg.update(BLOCK_N=32, num_stages=1)
        return cfg

    def _declare(self, arch: str, cfg: Mapping[str, int], *, reason: str | None = None
                 ) -> Generator[Action, Outcome, None]:
        """Write the rung's code (when kernel.py holds another design), else edit ``CONFIG``."""
        block = _block(cfg)
        if self._written != arch:
            self._written = arch
            source = rung_source(arch).replace(IMPORT_ANCHOR, IMPORT_ANCHOR + "\n" + block, 1)
            yield Action(reason or f"Rewrite kernel.py as the {arch} design: {DESIGN_NOTES[arch]}; "
                         f"launch config {_cfg_text(cfg)}.", "write_file",
                         {"path": "kernel.py", "content": source})
            return
        out = yield Action("Read the CONFIG line to edit it exactly.", "read_file",
                           {"path": "kernel.py", "start_line": 1, "end_line": 40})
        current = _declared_block(out.text)
        if current is None:  # no CONFIG line yet (the original kernel): add one after the imports
            yield Action(reason or f"Give the {arch} design a default launch config.", "edit_file",
                         {"path": "kernel.py", "old": IMPORT_ANCHOR, "new": IMPORT_ANCHOR + "\n" + block})
            return
        if current != block:
            yield Action(reason or f"Set the launch config of the {arch} design.", "edit_file",
                         {"path": "kernel.py", "old": current, "new": block})

    def _draw_bug(self, rng: random.Random, cfg: Mapping[str, int], arch: str) -> Bug | None:
        if self.rounds > 0 and rng.random() >= self.scale.bug_rate:
            return None
        code = rung_source(arch)
        fits = [b for b in (*CATALOG, *VARIANT_BUGS) if code.count(b.old) == 1]
        if not fits:
            return None
        if self.rounds == 0 and BUGS["prefix_value_load_unmasked"] in fits:
            bug = BUGS["prefix_value_load_unmasked"]  # the NaN every run meets early
        else:
            seen = [ALL_BUGS[b] for _, b in self.bugs_introduced if ALL_BUGS[b] in fits]
            pool = seen if seen and rng.random() < 0.6 else fits
            bug = pool[rng.randrange(len(pool))]
        if bug.name == "block_shape_mismatch" and cfg.get("BLOCK_M") == cfg.get("BLOCK_N"):
            bug = BUGS["causal_strict"] if BUGS["causal_strict"] in fits else fits[0]
            if bug.name == "block_shape_mismatch":
                return None
        if bug.name in self.know().bugs:
            return None  # a lesson it can still see: written correctly this time
        return bug

    def _compile_and_check(self, arch: str, bug: Bug | None, cfg: dict[str, int]
                           ) -> Generator[Action, Outcome, dict[str, int]]:
        for _attempt in range(3):
            out = yield Action(f"Compile the {arch} kernel.", "compile", {})
            if not out.is_error:
                break
            if "out of resource" in out.text:
                cfg = {**cfg, "BLOCK_N": 32, "num_stages": 1}
                yield from self._declare(arch, cfg, reason="The declared config does not fit; smaller K/V tiles.")
            elif bug is not None:
                yield from self._diagnose_and_fix(bug, "compile")
                bug = None
        for _attempt in range(3):
            out = yield Action("Check correctness on the dev suite.", "check", {})
            if "PASSED" in out.text or bug is None:
                break
            yield from self._diagnose_and_fix(bug, "check", eval_ref=out.text.split(" ", 1)[0])
            bug = None
            yield Action("Recompile after the fix.", "compile", {})
        return cfg

    def _diagnose_and_fix(self, bug: Bug, where: str, eval_ref: str = "") -> Generator[Action, Outcome, None]:
        yield Action(f"The {where} failed. Read the kernel body around the loads and the store.", "read_file",
                     {"path": "kernel.py", "start_line": 60, "end_line": 190})
        yield Action("What changed since the last commit?", "git_diff", {"path": "kernel.py"})
        ref = f" of {eval_ref}" if eval_ref.startswith("eval#") else ""
        yield Action(f"Root cause{ref}: {bug.name} — {bug.description}. Lesson: never write this again. "
                     "Fix it.", "edit_file", {"path": "kernel.py", "old": bug.new, "new": bug.old})

    def _subspaces(self, arch: str, r: int) -> list[tuple[str, ...]]:
        keys = set(arch_keys(arch))
        usable = [s for s in SUBSPACES if set(s) <= keys]
        shift = r % len(usable)
        return usable[shift:] + usable[:shift]

    def _space(self, arch: str, keys: tuple[str, ...], base: Mapping[str, int], know: Knowledge
               ) -> dict[str, list[int]] | None:
        """An autotune space over ``keys``: trimmed to fit the known limit and the size cap."""
        space = {k: list(CONFIG_SPACE[k]) for k in keys}
        if "BLOCK_M" in space:
            space["BLOCK_M"] = [v for v in space["BLOCK_M"] if v >= 32]

        def combos() -> list[dict[str, int]]:
            return [{**base, **dict(zip(space, vals, strict=True))} for vals in itertools.product(*space.values())]

        if know.smem_limit is not None or know.over_limit:
            # the limit is known: shrink the space until every config fits
            order = [k for k in ("num_stages", "BLOCK_N", "BLOCK_M") if k in space]
            while not all(self._fits(arch, c, know) for c in combos()):
                key = next((k for k in order if len(space[k]) > 1), None)
                if key is None:
                    return None
                space[key].pop()
        while math.prod(len(v) for v in space.values()) > self.scale.autotune_size:
            longest = max(space, key=lambda k: (len(space[k]), k))
            space[longest].pop(0)
        configs = [c for c in combos() if c.get("PACK", 1) <= c["BLOCK_M"]]
        if not configs:
            return None
        measured = [config_key(self.code(arch), c) in know.measured for c in configs]
        if sum(measured) * 2 >= len(measured):
            return None  # mostly measured already: nothing to learn
        return space

    def _finish(self) -> Generator[Action, Outcome, None]:
        self._finishing = True
        know = self.know()
        target = know.best_commit
        if target is None:
            out = yield Action("Before submitting: which commit is best?", "git_log", {"max_count": 10})
            target = _knowledge_of(out.text).best_commit
        if target is not None:
            yield Action(f"Restore the best commit {target[0]} ({target[1]:.2f}x) before submitting.",
                         "git_checkout", {"rev": target[0]})
        yield Action("Submit the kernel.", "submit", {})


def _knowledge_of(text: str) -> Knowledge:
    k = Knowledge()
    k.add(parse_facts(text))
    return k


def _cfg_text(cfg: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in cfg.items())


def _block(cfg: Mapping[str, int]) -> str:
    return f"CONFIG = {{{', '.join(f'{k!r}: {v}' for k, v in cfg.items())}}}\n"


def _declared_block(read_output: str) -> str | None:
    """The ``CONFIG`` line as it is in the file, from a ``read_file`` output."""
    lines = [re.sub(r"^\s*\d+  ", "", ln, count=1) for ln in read_output.splitlines()[1:]]
    found = [ln for ln in lines if ln.startswith("CONFIG = ")]
    return found[0] + "\n" if len(found) == 1 else None


def _rung_of(read_output: str) -> str | None:
    """Which rung a ``read_file`` of kernel.py shows, from its module docstring's first line."""
    for rung in RUNG_KEYS:
        if rung != "baseline" and rung_source(rung).splitlines()[1] in read_output:
            return rung
    return "baseline" if "the baseline kernel of the ctxmem kernel workload" in read_output else None


def tool_use_of(action: Action, tool_use_id: str) -> ToolUseBlock:
    return ToolUseBlock(tool_use_id, action.tool, dict(action.input))


__all__ = [
    "EVAL_TOOLS",
    "Action",
    "Facts",
    "Knowledge",
    "ScriptedPolicy",
    "config_key",
    "message_texts",
    "parse_facts",
    "parse_mode",
]
