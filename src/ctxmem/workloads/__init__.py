"""Workloads that drive ctxmem: agent tasks that produce long, realistic sessions."""
