"""Llama 3 message format: the parser of assistant turns (and, in `format`, the serializer)."""

from simworld.llama3.parse import ParseError, parse_assistant_turn

__all__ = ["ParseError", "parse_assistant_turn"]
