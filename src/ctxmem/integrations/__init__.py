"""ctxmem inside the agent loops people already run.

Each integration is its own module, imported on demand, and needs its extra:

=====================  ==========================  =======================================
module                 extra                       what it gives
=====================  ==========================  =======================================
``agents_sdk``         ``ctxmem[agents]``          ``CtxmemSession``: an OpenAI Agents SDK Session
``langchain``          ``ctxmem[langchain]``       LangChain v1 middleware / LangGraph pre_model_hook
``mcp``                ``ctxmem[mcp]``             an MCP server (``ctxmem mcp serve``)
``inspect``            ``ctxmem[inspect]``         Inspect AI tasks (``inspect eval ctxmem/niah``)
``anthropic_native``   (none)                      a masking preset as Anthropic ``context_management``
``otel``               ``ctxmem[otel]``            OpenTelemetry GenAI spans, off unless enabled
``responses``          (none)                      Responses-API items ↔ ctxmem messages
=====================  ==========================  =======================================

Importing ``ctxmem.integrations`` imports none of them.
"""
