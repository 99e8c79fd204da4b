"""Per-role views of the global event log.

For role R: R's own turns are `assistant`, R's tool results are `tool`, everything else R can see
(other roles' text, world notices addressed to R) is `user`; consecutive `user` pieces are joined.
Events R cannot see (other roles' tool calls and results) are dropped. A self-play negotiation
therefore yields one training sample per side.
"""

from __future__ import annotations

from collections.abc import Sequence

from simworld.types import Message


def perspective(events: Sequence[Message], role: str, system: str | None = None) -> list[Message]:
    out: list[Message] = []
    if system:
        out.append(Message(role="system", content=system))
    for ev in events:
        if ev.audience is not None and ev.audience != role:
            continue
        if ev.speaker == role:
            if ev.role == "tool":
                out.append(Message(role="tool", content=ev.content, tool_call_id=ev.tool_call_id,
                                   name=ev.name, error=ev.error))
            else:
                out.append(Message(role="assistant", content=ev.content, tool_calls=list(ev.tool_calls),
                                   invalid=ev.invalid))
            continue
        if ev.role == "tool" or not ev.content:
            continue
        if out and out[-1].role == "user":
            prev = out[-1]
            out[-1] = Message(role="user", content=prev.content + "\n\n" + ev.content)
        else:
            out.append(Message(role="user", content=ev.content))
    return out
