"""ctxmem's Inspect AI tasks, found through Inspect's entry point and run offline with mockllm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval as inspect_eval
from inspect_ai.log import list_eval_logs, read_eval_log

INSPECT = shutil.which("inspect") or str(Path(sys.executable).with_name("inspect"))


def test_inspect_eval_cli_finds_ctxmem_niah_and_samples_carry_the_preset(tmp_path: Path) -> None:
    # Offline, with an empty tiktoken cache: Inspect's mockllm counts usage with tiktoken's
    # o200k_base, whose file the task writes from quicktok's vocabulary (no download)
    cache = tmp_path / "tiktoken-cache"
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(INSPECT_LOG_DIR=str(tmp_path), TIKTOKEN_CACHE_DIR=str(cache),
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    proc = subprocess.run(
        [INSPECT, "eval", "ctxmem/niah", "--model", "mockllm/model", "--limit", "4",
         "-T", "preset=window-32k", "-T", "lengths=1k,2k", "-T", "depths=0,1",
         "--log-dir", str(tmp_path), "--display", "none"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (info,) = list_eval_logs(str(tmp_path))
    log = read_eval_log(info)
    assert log.status == "success" and log.eval.task == "ctxmem/niah", log.error
    assert len(list(cache.iterdir())) == 1  # o200k_base's file, under tiktoken's own name
    assert log.eval.task_args["preset"] == "window-32k"
    assert log.samples is not None and len(log.samples) == 4
    for s in log.samples:
        assert s.metadata["preset"] == "window-32k"
        score = s.scores["needle_scorer"]
        # mockllm answers a fixed sentence: every needle reached it and it missed them all
        assert score.value == "I" and score.metadata["preset"] == "window-32k"
        assert score.metadata["survival"] == "verbatim" and score.metadata["attribution"] == "missed-by-model"
        assert s.store["ctxmem"]["request_tokens"] > 900
        haystack = s.messages[0].text
        assert len(haystack) > 3000 and s.metadata["cell"]["length"] in (1000, 2000)
    metrics = {name: m.value for sc in log.results.scores for name, m in sc.metrics.items()}
    assert metrics["accuracy"] == 0 and metrics["survived"] == 1 and metrics["missed_by_model"] == 1


def test_a_preset_that_drops_the_needle_is_blamed_not_the_model(tmp_path: Path) -> None:
    from ctxmem.integrations.inspect import session_needles

    preset = tmp_path / "tiny-window.toml"
    preset.write_text(
        'type = "window"\n[budget]\ncontext_window = 2500\nreserve_output = 100\n', encoding="utf-8"
    )
    kept = tmp_path / "roomy.toml"
    kept.write_text('type = "dump"\n[budget]\ncontext_window = 100000\n', encoding="utf-8")
    logs = inspect_eval(
        [session_needles(lengths="6k", depths="0", preset=str(preset)),
         session_needles(lengths="6k", depths="0", preset=str(kept))],
        model="mockllm/model", log_dir=str(tmp_path / "logs"), display="none",
    )
    dropped, roomy = (log.samples[0].scores["needle_scorer"].metadata for log in logs)  # type: ignore[index]
    assert dropped["survival"] == "absent" and dropped["attribution"] == "dropped-by-strategy"
    assert roomy["survival"] == "verbatim" and roomy["attribution"] == "missed-by-model"
    metrics = {n: m.value for n, m in logs[0].results.scores[0].metrics.items()}  # type: ignore[union-attr]
    assert metrics["dropped_by_strategy"] == 1 and metrics["survived"] == 0


def test_task_parameters_read_like_the_cli_and_fail_once_when_wrong() -> None:
    """-T window=128k raised ValueError; -T preset=nope built a task whose every sample died
    in the solver with a traceback; -T seeds=0 left Inspect with an empty dataset."""
    from ctxmem.errors import InputError, UnknownNameError
    from ctxmem.integrations.inspect import niah

    task = niah(window="128k", lengths="1k", depths="0.5")  # type: ignore[arg-type]
    assert len(task.dataset) == 1
    # the reply limit the cells were sized for reaches the model call (it was left unset)
    assert task.config.max_tokens == 64
    assert niah(lengths="1k", depths="0.5", max_tokens=32).config.max_tokens == 32
    with pytest.raises(UnknownNameError, match="unknown preset 'nope'"):
        niah(preset="nope")
    for kwargs, field in (({"seeds": 0}, "seeds"), ({"window": "big"}, "window"), ({"max_tokens": 0}, "max_tokens")):
        with pytest.raises(InputError) as exc:
            niah(**kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field


def test_to_inspect_keeps_errors_and_reasoning() -> None:
    """An error result is an Inspect tool error, and thinking is reasoning content (with its
    signature; redacted thinking redacted), ahead of the text, as the model produced them."""
    from inspect_ai.model import (
        ChatMessageAssistant,
        ChatMessageTool,
        ChatMessageUser,
        ContentReasoning,
        ContentText,
    )

    from ctxmem.integrations.inspect import to_inspect
    from ctxmem.messages import (
        Message,
        RedactedThinkingBlock,
        TextBlock,
        ThinkingBlock,
        ToolResultBlock,
        ToolUseBlock,
    )

    out = to_inspect([
        Message.user("Compile it."),
        Message.assistant(ThinkingBlock("plan the build", "sig-1"), RedactedThinkingBlock("opaque"),
                          TextBlock("Compiling."), ToolUseBlock("c1", "compile", {"path": "k.py"}),
                          ToolUseBlock("c2", "check", {})),
        Message("user", (ToolResultBlock("c1", "OutOfResources: shared memory", is_error=True),
                         ToolResultBlock("c2", "ok"), TextBlock("Go on."))),
        Message.assistant("Done."),
    ], system="Be brief.")
    assert [m.role for m in out] == ["system", "user", "assistant", "tool", "tool", "user", "assistant"]
    ai = out[2]
    assert isinstance(ai, ChatMessageAssistant) and isinstance(ai.content, list)
    first, second, text = ai.content
    assert isinstance(first, ContentReasoning) and first.reasoning == "plan the build" and first.signature == "sig-1"
    assert isinstance(second, ContentReasoning) and second.redacted and second.reasoning == "opaque"
    assert isinstance(text, ContentText) and text.text == "Compiling."
    assert [c.function for c in ai.tool_calls or []] == ["compile", "check"]
    failed, fine = out[3], out[4]
    assert isinstance(failed, ChatMessageTool) and failed.error is not None
    assert failed.error.message == "OutOfResources: shared memory" and failed.function == "compile"
    assert isinstance(fine, ChatMessageTool) and fine.error is None and fine.content == "ok"
    assert isinstance(out[5], ChatMessageUser) and out[6].content == "Done."
