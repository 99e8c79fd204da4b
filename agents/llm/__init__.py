"""LLM agents through litellm: `agent.type: llm` plays any role (support with tools, user
simulator, negotiation party). litellm itself is imported only when a model is first called."""

from simworld.agents.llm.agent import LLMAgent, LLMParams

__all__ = ["LLMAgent", "LLMParams"]
