"""Meta's reference Llama 3 encoder (llama-models), used as the oracle of our serializer."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from llama_models.datatypes import RawMessage, StopReason, ToolCall, ToolPromptFormat
from llama_models.llama3.chat_format import ChatFormat
from llama_models.llama3.tokenizer import Tokenizer


@lru_cache(maxsize=1)
def chat_format() -> ChatFormat:
    return ChatFormat(Tokenizer.get_instance())


def raw_messages(messages: list[dict[str, Any]]) -> list[RawMessage]:
    """Our normalized message dicts as Meta's RawMessages (role `tool`, not `ipython`)."""
    out = []
    for m in messages:
        calls = [ToolCall(call_id=c["id"] or "x", tool_name=c["name"], arguments=c["arguments"])
                 for c in m.get("tool_calls") or []]
        stop = StopReason.end_of_message if calls else StopReason.end_of_turn
        out.append(RawMessage(role=m["role"], content=m["content"], tool_calls=calls,
                              stop_reason=stop if m["role"] == "assistant" else None))
    return out


def encode(messages: list[dict[str, Any]]) -> list[int]:
    """Token ids: <|begin_of_text|> then `encode_message` per message with ToolPromptFormat.json."""
    fmt = chat_format()
    tokens = [fmt.tokenizer.special_tokens["<|begin_of_text|>"]]
    for raw in raw_messages(messages):
        toks, _ = fmt.encode_message(raw, ToolPromptFormat.json)
        tokens.extend(toks)
    return tokens


def reference_text(messages: list[dict[str, Any]]) -> str:
    """The decoded output of Meta's ChatFormat for `messages`."""
    return chat_format().tokenizer.decode(encode(messages))
