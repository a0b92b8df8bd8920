"""A branching writer for the crash tests (run as a script, not collected).

    python branch_proc.py DB BASE SEED

Forever, on BASE and the forks it made: fork a session at a random event of its chain,
rewind a fork to a random event of its chain, or append a turn to a fork (an assistant
tool call and, most times, its result). Before each operation it prints
``I <op> <session> <arg> [<from>]`` and after its commit ``D <op> <session> <arg> [<from>]``:

* ``fork TAG AT FROM [SID]``  a new session titled TAG forked from FROM at event AT
  (SID, its id, in the done line only);
* ``rewind SID TO``            SID's head moved back to event TO;
* ``append SID HEAD``          events appended to SID (the done line names the new HEAD).

A fork is titled with a tag chosen before it, so a fork committed but not yet reported
can still be matched to its intent.
"""

from __future__ import annotations

import random
import sys

from ctxmem.messages import Message, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import SQLiteStore


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(db: str, base: str, seed: int) -> None:
    rng = random.Random(seed)
    store = SQLiteStore(db)
    forks = [s.id for s in store.list_sessions() if s.parent_session_id is not None]
    say("ready")
    n = 0
    while True:
        n += 1
        r = rng.random()
        if r < 0.4 or not forks:
            src = rng.choice([base, *forks])
            chain = [e.id for e in store.chain(src).events]
            if not chain:
                continue
            at = rng.choice(chain)
            tag = f"f{seed}-{n}"
            say(f"I fork {tag} {at} {src}")
            info = store.fork(src, at, title=tag)
            say(f"D fork {tag} {at} {src} {info.id}")
            forks.append(info.id)
        elif r < 0.7:
            sid = rng.choice(forks)
            chain = [e.id for e in store.chain(sid).events]
            to = rng.choice(chain)
            say(f"I rewind {sid} {to}")
            Session.open(store, sid).rewind(to)
            say(f"D rewind {sid} {to}")
        else:
            sid = rng.choice(forks)
            s = Session.open(store, sid)
            pending = s.pending_tool_uses()
            say(f"I append {sid} -")
            if pending:  # answer what the branch left open, as a resumed agent would
                head = s.record_tool_result(pending[0].id, f"late answer {seed}-{n}")
            else:
                call = ToolUseBlock(f"b{seed}_{n}", "run", {"n": n})
                ids = s.record(Message.assistant(f"turn {seed}-{n}", call))
                head = ids[-1]
                if rng.random() < 0.7:
                    head = s.record_tool_result(call.id, f"output {seed}-{n}\n" + "line\n" * rng.randint(0, 500))
            say(f"D append {sid} {head}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
