"""A candidate cannot forge its verdict: the judge runs in a process the candidate never runs in.

Each candidate below leaves a wrong output but tries to make the checker say PASS anyway.
Every one must be reported as a failing check (never as a pass, never as a harness crash).
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from ctxmem.workloads.kernel import CorrectnessChecker, SandboxLimits, Workspace, bwrap
from ctxmem.workloads.kernel.cases import suite
from ctxmem.workloads.kernel.correctness import TOLERANCES
from ctxmem.workloads.kernel.workspace import asset_path

# These run agent-written code: only in the sandbox. Where bubblewrap cannot start they
# skip, and test_attacks.py::test_without_bwrap_nothing_runs_unless_allowed tests the refusal.
_SANDBOX = bwrap.probe()
needs_sandbox = pytest.mark.skipif(_SANDBOX is not None, reason=f"no sandbox here: {_SANDBOX}")

HEADER = "import torch\n\n\n"

# A PASS as the old in-process checker wrote it: six cases, all passed, no error.
_FORGED = json.dumps({
    "status": "ok", "violations": [], "isolation": {},
    "cases": [{"name": f"case{i}", "passed": True, "numel": 1, "mismatches": 0,
               "max_abs_err": 0.0, "nan_count": 0, "oob_writes": 0, "inputs_modified": [],
               "seconds": 0.0} for i in range(6)],
})


def _launch(body: str) -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return HEADER + "def launch(q, k_new, v_new, out, *args, **kwargs):\n" + lines + "\n"


def _assert_failed(result: object) -> str:
    text = result.render()  # type: ignore[attr-defined]
    assert not result.passed, text  # type: ignore[attr-defined]
    assert "PASSED" not in text, text
    assert not any(c.passed for c in result.cases), text  # type: ignore[attr-defined]
    return text


@needs_sandbox
def test_a_forged_pass_written_to_inherited_descriptors_is_ignored(checker: CorrectnessChecker) -> None:
    # Every descriptor the process inherited gets the forged PASS, from the start; then the
    # process leaves before the runner could overwrite anything.
    source = _launch(f"""
import os
forged = {_FORGED!r}.encode()
for name in os.listdir('/proc/self/fd'):
    fd = int(name)
    if fd < 3:
        continue
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, forged)
    except OSError:
        pass
os._exit(0)
""")
    result = checker.check(source=source)
    text = _assert_failed(result)
    assert result.status == "error", text
    assert result.error is not None and result.error["type"] == "OutputError", text
    assert "OutputError" in text and "case 0" in text


@needs_sandbox
def test_a_forged_pass_after_real_outputs_is_ignored(checker: CorrectnessChecker) -> None:
    # Writes nothing to out (all NaN), appends a forged PASS to every descriptor and returns
    # normally: the extra bytes make the outputs unreadable, the claim is ignored.
    source = _launch(f"""
import os
for name in os.listdir('/proc/self/fd'):
    if int(name) >= 3:
        try:
            os.write(int(name), {_FORGED!r}.encode())
        except OSError:
            pass
""")
    result = checker.check(source=source)
    text = _assert_failed(result)
    assert result.status in ("ok", "error"), text


@needs_sandbox
def test_patching_allclose_and_assert_close_changes_nothing(checker: CorrectnessChecker) -> None:
    source = _launch("""
import torch.testing
torch.allclose = lambda *a, **k: True
torch.Tensor.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
torch.isclose = lambda a, b, *r, **k: torch.ones_like(a, dtype=torch.bool)
# And the primitives a hand-written comparison would use: every element "within
# tolerance", every guard element still NaN.
torch.Tensor.__le__ = lambda a, b: torch.ones(a.shape, dtype=torch.bool)
torch.isnan = lambda a: torch.ones(a.shape, dtype=torch.bool)
out.zero_()
""")
    result = checker.check(source=source)
    text = _assert_failed(result)
    assert result.status == "ok", text  # it ran to the end, and failed on values
    assert all(c.mismatches for c in result.cases), text
    assert "FAILED 6/6 cases" in text


@needs_sandbox
def test_copying_tensors_found_by_the_garbage_collector_fails(
    checker: CorrectnessChecker, workspace: Workspace
) -> None:
    # The attack on an in-process checker: find the precomputed expected output (same
    # shape as out, float32, not an input) among live objects and copy it into out.
    source = _launch("""
import gc
def mine(t):
    return (type(t) is torch.Tensor and t.shape == out.shape and t.dtype == torch.float32
            and t.data_ptr() not in (out.data_ptr(), q.data_ptr()))
found = []
for obj in gc.get_objects():
    try:
        # The checker's own bookkeeping: (case, inputs, expected) next to this case's inputs.
        # (type() rather than isinstance(): some lazy objects act on any attribute access.)
        if type(obj) is tuple and any(type(x) is dict and type(x.get('q')) is torch.Tensor
                                      and torch.equal(x['q'], q) for x in obj):
            found = [x for x in obj if mine(x)] + found
        elif mine(obj) and not torch.equal(obj.to(q.dtype), q):
            found.append(obj)
    except Exception:
        pass
if found:
    out.copy_(found[0].to(out.dtype))
""")
    result = checker.check(source=source)
    text = _assert_failed(result)
    # It ran to the end (status ok) and failed on values: the expected outputs live only
    # in the judge, outside the sandbox, so there was nothing to find.
    assert result.status == "ok", text


@needs_sandbox
def test_reading_the_judges_memory_through_proc_is_refused(checker: CorrectnessChecker) -> None:
    # The judge is a sibling process; as root its /proc/<pid>/mem is readable by open().
    source = _launch("""
import os
# The judge is forked right after this process; the supervisor is the parent.
for path in ('/proc/self/mem', f'/proc/{os.getppid()}/mem',
             *(f'/proc/{os.getpid() + i}/mem' for i in range(1, 4))):
    try:
        open(path, 'rb').close()
    except OSError:
        pass
""")
    result = checker.check(source=source)
    text = _assert_failed(result)
    assert result.status == "sandbox_violation", text
    kinds = {v["kind"] for v in result.violations}
    assert kinds <= {"reading another process", "reading raw process memory"}, kinds
    assert kinds == {"reading another process", "reading raw process memory"}, kinds


@needs_sandbox
def test_the_warm_worker_judges_forgeries_the_same_way(tmp_path: Path) -> None:
    checker = CorrectnessChecker(Workspace.create(tmp_path / "warm"),
                                 limits=SandboxLimits(timeout_s=60.0), warm=True)
    forged = _launch(f"""
import os


for name in os.listdir('/proc/self/fd'):
    if int(name) >= 3:
        try:
            os.lseek(int(name), 0, 0); os.ftruncate(int(name), 0)
            os.write(int(name), {_FORGED!r}.encode() + b'\\n')
        except OSError:
            pass
os._exit(0)
""")
    result = checker.check(source=forged)
    assert result.status == "error" and not result.passed, result.render()
    # The server's reply pipe was not reachable: the next check is answered normally.
    assert checker.check().passed


# The judge on its own: what the candidate's process claims is never a verdict.


@pytest.fixture(scope="module")
def prepared() -> tuple[object, dict, list]:
    torch = pytest.importorskip("torch")
    from ctxmem.workloads.kernel import judge

    specs = suite(0, "dev")[:2]
    job = {"reference_path": str(asset_path("reference.py")), "guard_rows": 4,
           "cases": [s.to_dict() for s in specs],
           "tolerances": {k: {"atol": v.atol, "rtol": v.rtol} for k, v in TOLERANCES.items()}}
    return torch, job, judge.expected_outputs(torch, job)


def _frames(torch: object, job: dict, prepared: list, *, correct: bool) -> bytes:
    from ctxmem.workloads.kernel import _runner

    buf = io.BytesIO()
    for index, (case, clean, expected) in enumerate(prepared):
        guard = job["guard_rows"] * case["num_q_heads"] * case["head_dim"]
        value = expected.to(clean["q"].dtype) if correct else torch.zeros_like(clean["q"])  # type: ignore[attr-defined]
        out_buf, _ = _runner.guarded(torch, value, guard, float("nan"))
        inputs = _runner.guarded_inputs(torch, clean, guard)
        _runner.write_frame(buf, index, case["name"],
                             [("out", out_buf), *((n, b) for n, (b, _) in inputs.items())])
    return buf.getvalue()


def test_the_judge_passes_only_on_its_own_comparison(prepared: tuple) -> None:
    from ctxmem.workloads.kernel import judge

    torch, job, cases = prepared
    good = judge.judge(torch, job, cases, {"status": "ok"},
                         io.BytesIO(_frames(torch, job, cases, correct=True)))
    assert good["status"] == "ok" and all(c["passed"] for c in good["cases"])
    claims = {"status": "ok", "cases": [{"passed": True, "mismatches": 0}] * 2}
    bad = judge.judge(torch, job, cases, claims,
                        io.BytesIO(_frames(torch, job, cases, correct=False)))
    assert bad["status"] == "ok" and not any(c["passed"] for c in bad["cases"])
    assert all(c["mismatches"] for c in bad["cases"])


@pytest.mark.parametrize("damage", ["missing", "truncated", "trailing", "wrong_case",
                                    "wrong_dtype", "garbage"])
def test_malformed_outputs_are_a_clear_failure(prepared: tuple, damage: str) -> None:
    from ctxmem.workloads.kernel import judge

    torch, job, cases = prepared
    data = _frames(torch, job, cases, correct=True)
    if damage == "missing":
        stream = None
    elif damage == "truncated":
        stream = io.BytesIO(data[:-10])
    elif damage == "trailing":
        stream = io.BytesIO(data + b"x")
    elif damage == "garbage":
        stream = io.BytesIO(_FORGED.encode())
    else:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
        if damage == "wrong_case":
            header["case"] = 1
        else:
            header["buffers"][0]["dtype"] = "float64"
        head = json.dumps(header).encode()
        stream = io.BytesIO(struct.pack("<Q", len(head)) + head + data[8 + length:])
    result = judge.judge(torch, job, cases, {"status": "ok"}, stream)
    assert result["status"] == "error"
    assert result["error"]["type"] == "OutputError"
    assert result["error"]["message"]  # and a status other than "ok" is never a pass
