"""Llama 3 message format: the serializer (`format`) and the parser of assistant turns (`parse`)."""

from simworld.llama3.format import llama3_messages, render_messages, render_tool_calls, render_with_spans
from simworld.llama3.parse import ParseError, parse_assistant_turn

__all__ = ["ParseError", "llama3_messages", "parse_assistant_turn", "render_messages", "render_tool_calls",
           "render_with_spans"]
