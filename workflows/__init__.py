"""Temporal workflows: ``AgentWorkflow`` (see the durable runs issue)."""
