"""A writer process for the crash and concurrency tests (run as a script, not collected).

DB is a path or any store URL (``postgresql://…``): opened with ``open_store``.

    python writer_proc.py crash DB SESSION SEED
        Resume SESSION (answer any pending tool call as interrupted, like an agent would),
        print "ready", then append forever: user text, assistant turns with 1-3 tool calls,
        their results one at a time, notes. After each commit print "<id> <kind> <tool_use_id>".

    python writer_proc.py bulk DB SESSION COUNT TAG
        Append COUNT single-event transactions to SESSION; print each id after commit. A
        message waits (and retries) while another writer's tool call has no result yet.
"""

from __future__ import annotations

import random
import sys
import time

from ctxmem.errors import InvalidConversationError
from ctxmem.messages import Message, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import open_store


def emit(ids: list[int], kinds: list[str], tool_ids: list[str]) -> None:
    for i, k, t in zip(ids, kinds, tool_ids, strict=True):
        sys.stdout.write(f"{i} {k} {t}\n")
    sys.stdout.flush()


def crash(db: str, sid: str, seed: int) -> None:
    rng = random.Random(seed)
    store = open_store(db)
    try:
        s = Session.open(store, sid)
    except KeyError:
        s = Session.create(store, session_id=sid, tokenizers=["heuristic"])
    for u in s.pending_tool_uses():
        eid = s.record_tool_result(u.id, "interrupted: the writer was killed", is_error=True)
        emit([eid], ["tool_result"], [u.id])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 0
    while True:
        n += 1
        r = rng.random()
        if r < 0.1:
            eid = s.note(f"note {seed}-{n}")
            emit([eid], ["note"], ["-"])
            continue
        if r < 0.25:
            ids = s.record(Message.user(f"user says {seed}-{n} " + "word " * rng.randint(1, 200)))
            emit(ids, ["message"] * len(ids), ["-"] * len(ids))
        calls = [ToolUseBlock(f"t{seed}_{n}_{k}", "run", {"n": n, "k": k}) for k in range(rng.randint(1, 3))]
        ids = s.record(Message.assistant(f"turn {n}", *calls))
        emit(ids, ["message"] + ["tool_call"] * len(calls), ["-"] + [c.id for c in calls])
        for c in calls:
            time.sleep(rng.uniform(0, 0.004))  # the tool runs: a window with a pending call
            out = f"output of {c.id}\n" + "log line\n" * rng.randint(0, 3000)
            eid = s.record_tool_result(c.id, out, tool_name="run")
            emit([eid], ["tool_result"], [c.id])


def record_when_answered(s: Session, message: Message) -> list[int]:
    """Record a message once no tool call of the session waits for its result: on a shared
    session, another writer's call keeps the door shut until that writer answers it."""
    while True:
        try:
            return s.record(message)
        except InvalidConversationError as exc:
            if "still wait" not in str(exc):
                raise
            time.sleep(0.0005)


def bulk(db: str, sid: str, count: int, tag: str) -> None:
    store = open_store(db)
    s = Session.open(store, sid)
    for n in range(count):
        k = n % 4
        if k == 0:
            ids = record_when_answered(s, Message.user(f"{tag} message {n}"))
        elif k == 1:
            ids = record_when_answered(s, Message.assistant(ToolUseBlock(f"{tag}_{n}", "run", {"n": n})))
        elif k == 2:
            ids = [s.record_tool_result(f"{tag}_{n - 1}", f"{tag} output {n}")]
        else:
            ids = [s.note(f"{tag} note {n}")]
        emit(ids, ["x"] * len(ids), [tag] * len(ids))
    store.close()


if __name__ == "__main__":
    if sys.argv[1] == "crash":
        crash(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        bulk(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
