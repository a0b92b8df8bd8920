"""The PostgreSQL stores where a server, a role or the data is unkind (``tests/pg_server.py``).

* a second answer to a tool call whose id holds NUL (stored escaped) is refused, as on SQLite;
* a writer frozen inside its transaction makes the others fail with ``StoreBusyError``
  after their lock waits, not wait forever; the server ends the frozen one's session;
* a pool that cannot fill (a role's connection limit) is one ``StoreError`` line within
  ``connect_timeout``, with no pool warnings;
* passwords are redacted in every place a conninfo string carries one;
* a SELECT-only role and a read-only transaction open a migrated store and read it;
* a tool output whose first 300k characters pass the tsvector cap in bytes is stored and
  its prefix searchable;
* the results store reconnects after its connection was cut;
* a search hit in an output holding NUL has a snippet.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from typing import Any

import psycopg
import pytest

import pg_server
from ctxmem.errors import InvalidConversationError, StoreBusyError, StoreError
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import PostgresStore, open_store
from ctxmem.store.postgres import redact


class _RivalFirst:
    """A store through which a rival answers the call just before this session's append
    (between its check and its write: the race the store's append check closes)."""

    def __init__(self, store: Any, rival: Any):
        self._store, self._rival = store, rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def append(self, *args: Any, **kwargs: Any) -> Any:
        rival, self._rival = self._rival, None
        if rival is not None:
            rival()
        return self._store.append(*args, **kwargs)


@pytest.mark.parametrize("tool_id", ["tX", "t\x00X"])
def test_a_second_answer_to_a_call_is_refused_even_when_its_id_holds_nul(pg_url: str, tool_id: str) -> None:
    with open_store(pg_url) as store:
        s = Session.create(store, messages=[Message.user("go"), Message.assistant(ToolUseBlock(tool_id, "sh", {}))])
        b = Session.open(store, s.id)
        a = Session.open(_RivalFirst(store, lambda: b.record_tool_result(tool_id, "from B")), s.id)
        with pytest.raises(InvalidConversationError):
            a.record_tool_result(tool_id, "from A")
        results = [e for e in Session.open(store, s.id).events() if e.kind == "tool_result"]
        assert [e.event.result.text for e in results] == ["from B"]


def test_a_frozen_writer_makes_others_busy_not_blocked(pg_url: str) -> None:
    with open_store(pg_url) as store:
        sid = Session.create(store).id
        with store.pool.connection() as conn:  # the defaults
            assert conn.execute("SHOW lock_timeout").fetchone()[0] == "5s"
            assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "1min"
    frozen = psycopg.connect(pg_url)  # holds the session's row lock, as a stopped writer would
    frozen.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (sid,))
    try:
        with PostgresStore(pg_url, pool_size=1, busy_timeout_ms=200, lock_attempts=3) as store:
            s = Session.open(store, sid)
            t0 = time.monotonic()
            with pytest.raises(StoreBusyError) as exc:
                s.record(Message.user("blocked"))
            assert time.monotonic() - t0 < 10 and "\n" not in str(exc.value)
        frozen.rollback()  # the lock is free: the next append lands
        with PostgresStore(pg_url, pool_size=1, busy_timeout_ms=200, lock_attempts=3) as store:
            Session.open(store, sid).record(Message.user("now"))
    finally:
        frozen.close()


def test_the_server_ends_a_writer_idle_inside_its_transaction(pg_url: str) -> None:
    with PostgresStore(pg_url, pool_size=1, idle_timeout_ms=300) as store:
        sid = Session.create(store).id
        with pytest.raises(psycopg.Error), store.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT 1 FROM sessions WHERE id = %s FOR UPDATE", (sid,))
            time.sleep(1.5)  # frozen: the server cuts the session, and its lock goes
            conn.execute("SELECT 1")
        with PostgresStore(pg_url, pool_size=1, busy_timeout_ms=200, lock_attempts=2) as other:
            Session.open(other, sid).record(Message.user("after"))


def _role_of_one_connection(pg_url: str, password: str | None = None) -> tuple[str, str]:
    """A new login role allowed one connection (``CONNECTION LIMIT 1``), and ``pg_url`` as it."""
    role = "lim_" + uuid.uuid4().hex[:8]
    with psycopg.connect(pg_server.shared().url, autocommit=True) as admin:
        secret = f"PASSWORD '{password}' " if password else ""
        admin.execute(f"CREATE ROLE {role} LOGIN {secret}CONNECTION LIMIT 1")
        admin.execute(f"GRANT postgres TO {role}")
    return role, pg_url.replace("postgres@", f"{role}:{password}@" if password else f"{role}@", 1)


def test_a_pool_that_cannot_fill_is_one_line_within_the_connect_timeout(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    role, url = _role_of_one_connection(pg_url, "pw")
    t0 = time.monotonic()
    with pytest.raises(StoreError) as exc:
        PostgresStore(url, pool_size=2, connect_timeout=2)
    took = time.monotonic() - t0
    msg = str(exc.value)
    assert took < 10, took
    assert "\n" not in msg and "pw" not in msg and f"{role}:***@127.0.0.1" in msg and "pool_size" in msg, msg
    assert not [r for r in caplog.records if r.name.startswith("psycopg.pool") and r.levelno >= logging.WARNING]


def test_a_pool_that_cannot_fill_prints_nothing_in_a_fresh_process(pg_url: str) -> None:
    _, url = _role_of_one_connection(pg_url)
    code = (
        "import sys\nfrom ctxmem.errors import StoreError\nfrom ctxmem.store import PostgresStore\n"
        "try:\n    PostgresStore(sys.argv[1], pool_size=2, connect_timeout=2)\n"
        "except StoreError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.count("\n") == 1, out.stdout
    assert out.stderr == "", out.stderr  # no "error connecting in 'ctxmem'" warnings


@pytest.mark.parametrize(("given", "shown"), [
    ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("postgresql://u:sec@ret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u@h/db?password=secret&sslmode=require", "postgresql://u@h/db?password=***&sslmode=require"),
    ("postgresql://u@h/db?sslmode=require&password=secret", "postgresql://u@h/db?sslmode=require&password=***"),
    ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
    ("host=h password = 'se cret\\'s' user=u", "host=h password = *** user=u"),
    ("postgresql://u@h/db?options=-csearch_path%3Dx", "postgresql://u@h/db?options=-csearch_path%3Dx"),
])
def test_redact_hides_every_form_of_password(given: str, shown: str) -> None:
    assert redact(given) == shown


def test_an_unreachable_server_with_a_query_password_does_not_show_it() -> None:
    with pytest.raises(StoreError) as exc:
        open_store("postgresql://u@127.0.0.1:1/db?password=secret", connect_timeout=2)
    assert "secret" not in str(exc.value) and "password=***" in str(exc.value)


def test_a_select_only_role_and_a_read_only_transaction_read_a_migrated_store(pg_url: str) -> None:
    server = pg_server.shared()
    with open_store(pg_url) as store:
        s = Session.create(store, title="readable")
        s.record(Message.user("hello"))
    schema = pg_url.rsplit("%3D", 1)[1]
    role = "reader_" + uuid.uuid4().hex[:8]
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    for url in (pg_url.replace("postgres@", f"{role}@", 1), pg_url + "%20-cdefault_transaction_read_only%3Don"):
        with open_store(url) as store:
            assert [i.title for i in store.list_sessions()] == ["readable"]
            assert Session.open(store, s.id).messages() == [Message.user("hello")]


def test_a_tool_output_past_the_tsvector_cap_in_bytes_is_stored_and_its_prefix_found(pg_url: str) -> None:
    # 300k characters, 1.1 MB: distinct 9-character words of 4-byte characters
    words = [
        "".join(chr(0x20000 + (i * 9 + k) * 7 % 0xA6DF) for k in range(9)) for i in range(30_000)
    ]
    out = " ".join(words)
    assert len(out.encode()) > 1_048_575
    with open_store(pg_url) as store:
        s = Session.create(store)
        s.record_many([Message.user("go"), Message.assistant(ToolUseBlock("t1", "cat", {})),
                       Message.user(ToolResultBlock("t1", out))])
        again = Session.open(store, s.id)
        assert again.messages()[-1].content[0].text == out
        assert [h.tool_use_id for h in store.search(words[0], session_id=s.id)] == ["t1"]


def test_a_search_hit_in_an_output_holding_nul_has_a_snippet(pg_url: str) -> None:
    with open_store(pg_url) as store:
        s = Session.create(store)
        s.record_many([Message.user("go"), Message.assistant(ToolUseBlock("t1", "sh", {})),
                       Message.user(ToolResultBlock("t1", "head\x00 some zzuniq words after"))])
        (hit,) = store.search("zzuniq", session_id=s.id)
        assert hit.snippet == "head\x00 some [zzuniq] words after"


def test_the_results_store_reconnects_after_its_connection_is_cut(pg_url: str) -> None:
    from ctxmem.evals.pg_store import PgResultStore

    server = pg_server.shared()

    def cut(store: PgResultStore) -> None:
        with psycopg.connect(server.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (store.conn.info.backend_pid,))
        time.sleep(0.2)

    with PgResultStore(pg_url) as store:
        cut(store)
        assert store.statuses() == {}
        cut(store)
        store.put({"key": "k1", "status": "done", "cell": "{}", "resolved": "{}"})
        cut(store)
        assert store.claim("k2", "me")
        assert [(r["key"], r["attempts"]) for r in store.rows()] == [("k1", 1)]


def test_json_escaped_ids_round_trip_through_the_delta_read(pg_url: str) -> None:
    """An id stored escaped because the *tool name* holds NUL is compared decoded too."""
    with open_store(pg_url) as store:
        s = Session.create(store, messages=[Message.user("go"), Message.assistant(ToolUseBlock("t9", "s\x00h", {}))])
        b = Session.open(store, s.id)
        a = Session.open(_RivalFirst(store, lambda: b.record_tool_result("t9", "from B")), s.id)
        with pytest.raises(InvalidConversationError):
            a.record_tool_result("t9", "from A")
        assert [e.kind for e in store.chain(s.id).events].count("tool_result") == 1
