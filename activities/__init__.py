"""Temporal activities: LLM turns, tools, artifacts (see the durable runs issue)."""
