"""The judge: the verdict on a sandboxed check, computed outside the sandbox.

The candidate's process (inside the bubblewrap sandbox, see ``sandbox.py``) leaves two
files in its check folder: the raw buffers as it left them (``outputs.bin``: per case a
length-prefixed JSON header naming the case and each buffer's dtype and size, then the
bytes — the output *and* every input, NaN guard bands included) and its account of the run
(``report.json``). The harness reads both through a descriptor of the folder it opened
before the candidate started, never following a link (``sandbox.read_box_file``), and
:func:`judge` does the whole comparison itself, in the harness's process, which the
sandbox cannot see:

* the expected outputs come from the pristine reference shipped with ctxmem (never the
  workspace copy), computed here in fp32 and memoized per (reference, cases) — the
  candidate's process never holds them, so nothing there can be copied;
* every frame header is checked against the job (case, buffer names, dtypes, sizes);
  outputs that are missing, truncated, malformed or run past the last case are an
  ``error`` (``OutputError``) with a message saying which;
* tolerances, NaNs, guard-band (out-of-bounds) writes and bit-exact input buffers are
  judged from the bytes;
* of the report only plain strings and numbers about what went wrong are kept; any claim
  of pass or fail there is ignored, and ``ok`` stands only if every case's buffers are
  present and well formed.

So a candidate may write anything to its files, patch torch, or search its own process's
objects: to pass, the buffers must hold the right numbers.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from collections import OrderedDict
from typing import IO, Any

from ctxmem.workloads.kernel._runner import guarded_inputs, load_module

_MEMO_SIZE = 16


class OutputError(ValueError):
    """The candidate's process left outputs that cannot be read as this job's buffers."""


def _read_exact(f: IO[bytes], n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise OutputError(f"{what} is truncated ({len(data)} of {n} bytes)")
    return data


def _read_frame(torch: Any, f: IO[bytes], index: int, name: str,
                expect: list[tuple[str, Any, int]]) -> dict[str, Any] | None:
    """The next frame, checked against ``expect`` = [(buffer, dtype, numel)]; None at EOF."""
    size = f.read(8)
    if not size:
        return None
    if len(size) != 8:
        raise OutputError(f"the output record of case {index} ({name}) is truncated")
    (length,) = struct.unpack("<Q", size)
    if length > 1 << 20:
        raise OutputError(f"the output record of case {index} ({name}) has a bad header")
    try:
        header = json.loads(_read_exact(f, length, f"the output header of case {index}"))
    except ValueError as exc:
        raise OutputError(f"the output header of case {index} ({name}) is not JSON") from exc
    wanted = [{"name": n, "dtype": str(d).removeprefix("torch."), "numel": k} for n, d, k in expect]
    if not isinstance(header, dict) or header.get("case") != index or header.get("name") != name \
            or header.get("buffers") != wanted:
        raise OutputError(f"the output record of case {index} ({name}) does not describe "
                          "this case's buffers")
    buffers = {}
    for n, dtype, numel in expect:
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        data = bytearray(_read_exact(f, nbytes, f"buffer {n} of case {index} ({name})"))
        buffers[n] = torch.frombuffer(data, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
    return buffers


def _bits(torch: Any, t: Any) -> Any:
    if t.dtype == torch.float16:
        return t.view(torch.int16)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    return t


def _judge_case(torch: Any, case: dict[str, Any], clean: dict[str, Any], expected: Any,
                buffers: dict[str, Any], guard: int, tol: dict[str, float]) -> dict[str, Any]:
    record: dict[str, Any] = {"name": case["name"], "passed": False, "numel": expected.numel()}
    out_buf = buffers["out"]
    n = expected.numel()
    out = out_buf[guard : guard + n].view(expected.shape)
    # Out-of-bounds writes: guard elements of the output that are no longer NaN, and any
    # change at all in the inputs' buffers (guards or payload).
    lo, hi = out_buf[:guard], out_buf[guard + n:]
    record["oob_writes"] = int((~torch.isnan(lo)).sum() + (~torch.isnan(hi)).sum())
    modified = []
    for name, (ref_buf, _) in guarded_inputs(torch, clean, guard).items():
        if not torch.equal(_bits(torch, buffers[name]), _bits(torch, ref_buf)):
            modified.append(name)
    record["inputs_modified"] = modified

    got = out.float()
    diff = (got - expected).abs()
    ok = diff <= tol["atol"] + tol["rtol"] * expected.abs()
    finite = torch.isfinite(diff)
    record["nan_count"] = int(torch.isnan(got).sum())
    record["mismatches"] = int((~ok).sum())
    record["max_abs_err"] = float(diff[finite].max()) if bool(finite.any()) else None
    if record["mismatches"]:
        bad = (~ok).nonzero()[0].tolist()
        record["first_mismatch"] = {"index": bad, "got": _num(got[tuple(bad)]),
                                    "expected": _num(expected[tuple(bad)])}
    record["passed"] = not record["mismatches"] and not record["oob_writes"] and not modified
    return record


def _num(x: Any) -> float | None:
    value = float(x)
    return value if value == value and abs(value) != float("inf") else None


_REPORTED = ("ok", "compile_error", "error", "memory_limit", "sandbox_violation")


def _text(value: Any, limit: int = 4000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _clean_error(error: Any) -> dict[str, Any] | None:
    """The candidate's account of an exception, reduced to plain strings (it is untrusted)."""
    if not isinstance(error, dict):
        return None
    out: dict[str, Any] = {k: _text(error.get(k)) for k in ("type", "message", "tail")}
    if isinstance(error.get("phase"), str):
        out["phase"] = _text(error["phase"], 200)
    where = error.get("where")
    out["where"] = None
    if isinstance(where, dict) and isinstance(where.get("line"), int) \
            and not isinstance(where.get("line"), bool):
        out["where"] = {"line": where["line"], "function": _text(where.get("function"), 200),
                        "code": _text(where.get("code"), 500) or None}
    return out


def _clean_report(raw: Any) -> dict[str, Any]:
    """What the judge keeps of the candidate process's report: never a pass/fail claim."""
    raw = raw if isinstance(raw, dict) else {}
    status = raw.get("status") if raw.get("status") in _REPORTED else None
    cases = [c for c in raw.get("cases", []) if isinstance(c, dict)][:10_000] \
        if isinstance(raw.get("cases"), list) else []
    violations = raw.get("violations") if isinstance(raw.get("violations"), list) else []
    isolation = raw.get("isolation") if isinstance(raw.get("isolation"), dict) else {}
    return {
        "status": status,
        "error": _clean_error(raw.get("error")),
        "cases": cases,
        "violations": [{"kind": _text(v.get("kind"), 200), "detail": _text(v.get("detail"), 500)}
                       for v in violations[:50] if isinstance(v, dict)],
        "isolation": {_text(k, 100): _text(v, 500) for k, v in isolation.items()},
        **{k: raw[k] for k in ("VmPeak", "VmHWM")
           if isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool)},
    }


def _seconds(entry: dict[str, Any]) -> float | None:
    value = entry.get("seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def judge(torch: Any, job: dict[str, Any], prepared: list[tuple[dict[str, Any], Any, Any]],
          raw_report: Any, outputs: IO[bytes] | None) -> dict[str, Any]:
    """The verdict on one run, from the candidate's raw outputs and the expected outputs.

    ``prepared`` = [(case, clean inputs, expected output)], computed here, never in the
    candidate's process. Of the candidate process's report only its account of what went
    wrong is kept (status other than pass/fail, exception text, refused actions, memory
    figures); every number that decides a case comes from ``outputs``.
    """
    report = _clean_report(raw_report)
    status = report.pop("status")
    claimed = report.pop("cases")
    result: dict[str, Any] = {**report, "cases": []}
    guard_rows = int(job["guard_rows"])
    tolerances = job["tolerances"]
    problem = None
    for index, (case, clean, expected) in enumerate(prepared):
        guard = guard_rows * case["num_q_heads"] * case["head_dim"]
        expect = [("out", clean["q"].dtype, expected.numel() + 2 * guard),
                  *((n, t.dtype, t.numel() + 2 * guard) for n, t in clean.items())]
        try:
            if outputs is None:
                raise OutputError("the candidate's process left no output file")
            buffers = _read_frame(torch, outputs, index, case["name"], expect)
        except OutputError as exc:
            problem = (index, str(exc))
            break
        if buffers is None:
            if status == "ok":
                problem = (index, f"no output record for case {index} ({case['name']})")
            elif index < len(claimed) and not claimed[index].get("written"):
                # The case the candidate raised in (its account, and a failure either way).
                result["cases"].append({"name": case["name"], "passed": False,
                                        "numel": expected.numel(),
                                        "seconds": _seconds(claimed[index])})
            break
        record = _judge_case(torch, case, clean, expected, buffers, guard,
                             tolerances[case["dtype"]])
        record["seconds"] = _seconds(claimed[index]) if index < len(claimed) else None
        result["cases"].append(record)
    else:
        if outputs is not None and outputs.read(1):
            problem = (len(prepared), "the output file has data past the last case")
    if problem is not None and status == "ok":
        # The candidate's process says it finished, but its outputs do not show it: a
        # failure, whatever else it claims. (After a crash or an exception the outputs stop
        # early anyway; what the crash or exception says is the better message then.)
        index, message = problem
        phase = (f"case {prepared[index][0]['name']}" if index < len(prepared)
                 else "reading outputs")
        status = "error"
        result["error"] = {"type": "OutputError", "phase": phase, "where": None,
                           "message": message, "tail": f"OutputError: {message}"}
    if status is not None:
        result["status"] = status
    return result


class ExpectedOutputs:
    """Expected outputs per (reference file, cases), computed once (LRU of 16 suites)."""

    def __init__(self) -> None:
        self._memo: OrderedDict[str, list[tuple[dict[str, Any], Any, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, torch: Any, job: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Any]]:
        with open(job["reference_path"], "rb") as f:
            ref = hashlib.sha256(f.read()).hexdigest()
        key = ref + json.dumps(job["cases"], sort_keys=True)
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        prepared = expected_outputs(torch, job)
        with self._lock:
            self._memo[key] = prepared
            while len(self._memo) > _MEMO_SIZE:
                self._memo.popitem(last=False)
        return prepared


def expected_outputs(torch: Any, job: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Any]]:
    """[(case, clean inputs, expected output)] from the pristine reference, in fp32."""
    reference = load_module("ctxmem_kernel_reference", job["reference_path"])
    prepared = []
    with torch.no_grad():
        for case in job["cases"]:
            inputs = reference.build_inputs(case)
            model = reference.Model(*reference.init_args(case))
            expected = model(*[inputs[n].float()
                               if n in ("q", "k_new", "v_new", "k_pool", "v_pool")
                               else inputs[n] for n in reference.INPUT_NAMES])
            prepared.append((case, inputs, expected))
    return prepared
