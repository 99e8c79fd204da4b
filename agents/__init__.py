"""Agents: scripted (oracles, customer simulators, negotiation strategies) and LLM agents.

Importing this package registers the built-in agents.
"""
from simworld.agents import llm as _llm  # noqa: F401
from simworld.agents import retail as _retail  # noqa: F401
from simworld.agents import negotiation as _negotiation  # noqa: F401
