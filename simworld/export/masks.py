"""Token-level loss masks with the tokenizer shipped in Meta's `llama-models` package.

Tokens are exactly what llama-models' ``ChatFormat`` produces for the sample's messages
(``<|begin_of_text|>`` then ``encode_message`` per message, ``ToolPromptFormat.json``), so they
decode to the sample's `text`. The mask is 1 on the tokens of the perspective's valid assistant
turns (content, tool call and the closing ``<|eot_id|>``/``<|eom_id|>``) and 0 elsewhere (headers,
system, user and tool results).
"""

from __future__ import annotations

from typing import Any

from simworld.errors import SimworldError


class LlamaTokenizer:
    """Meta's Llama 3 tokenizer and chat format, loaded once."""

    def __init__(self) -> None:
        try:
            from llama_models.datatypes import RawMessage, StopReason, ToolCall, ToolPromptFormat
            from llama_models.llama3.chat_format import ChatFormat
            from llama_models.llama3.tokenizer import Tokenizer
        except ImportError:
            raise SimworldError("--tokenize needs the llama-models package: pip install llama-models") from None
        self._raw, self._stop, self._call, self._fmt = RawMessage, StopReason, ToolCall, ToolPromptFormat.json
        self.chat = ChatFormat(Tokenizer.get_instance())
        self.bos = self.chat.tokenizer.special_tokens["<|begin_of_text|>"]

    def encode_message(self, m: dict[str, Any]) -> tuple[int, list[int]]:
        """(header length, tokens) of one normalized message."""
        calls = [self._call(call_id=c.get("id") or "call", tool_name=c["name"], arguments=c.get("arguments") or {})
                 for c in m.get("tool_calls") or []]
        stop = None
        if m["role"] == "assistant":
            stop = self._stop.end_of_message if calls else self._stop.end_of_turn
        raw = self._raw(role=m["role"], content=m["content"], tool_calls=calls, stop_reason=stop)
        tokens, _ = self.chat.encode_message(raw, self._fmt)
        return len(self.chat._encode_header(m["role"])), tokens

    def decode(self, tokens: list[int]) -> str:
        return self.chat.tokenizer.decode(tokens)


def token_masks(normalized: list[dict[str, Any]], tokenizer: LlamaTokenizer) -> tuple[list[int], list[int]]:
    """(tokens, mask) of normalized Llama 3 messages."""
    tokens = [tokenizer.bos]
    mask = [0]
    for m in normalized:
        header, toks = tokenizer.encode_message(m)
        tokens.extend(toks)
        trained = m["role"] == "assistant" and not m.get("invalid")
        mask.extend([0] * header + [1 if trained else 0] * (len(toks) - header))
    return tokens, mask
