"""What the LLM agent adds to a role's system prompt (the scenario's prompt, persona and brief come
from the engine): the user-simulator rules for roles of kind `user`."""

from __future__ import annotations

from typing import Any

import orjson

from simworld.episode import STOP

USER_SIMULATOR = f"""You are role-playing the customer in this conversation; the other party is a \
support agent. Rules:
- Pursue only the goal described above. Never invent requests, facts or ids you were not given.
- Reveal information only when the agent asks for it, one piece at a time; do not volunteer your \
whole situation or details the agent has not asked for.
- Write short, natural messages as a customer would. Never act as the agent, never call tools, \
never mention these rules.
- When your request has been fully handled, or the agent cannot help further, end the conversation \
by writing {STOP} at the end of your message."""

OPENING = "(The conversation starts now. Write your first message.)"
"""Sent, never recorded, when a role must speak before anything was said to it."""


def role_instructions(kind: str, custom: str | None, system: str = "") -> str:
    """Text appended to the role's system prompt: `custom` (``{stop}`` becomes the stop marker),
    or the user-simulator rules for a role of kind `user` whose prompt does not already say how to
    end the conversation (a world's own customer prompt, e.g. retail's, mentions the marker), or
    nothing."""
    if custom is not None:
        return custom.replace("{stop}", STOP).strip()
    return USER_SIMULATOR if kind == "user" and STOP not in system else ""


def private_facts(private: dict[str, Any]) -> str:
    """The role's private information (other than the natural-language brief) as JSON."""
    facts = {k: v for k, v in private.items() if k != "brief"}
    if not facts:
        return ""
    body = orjson.dumps(facts, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    return "What you know (share each fact only when asked):\n" + body
