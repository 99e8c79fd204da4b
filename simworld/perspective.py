"""Per-role views of the global event log.

For role R: R's own turns are `assistant`, R's tool results are `tool`, everything else R can see
(other roles' text, world notices addressed to R) is `user`; consecutive `user` pieces are joined.
Events R cannot see (other roles' tool calls and results) are dropped. A self-play negotiation
therefore yields one training sample per side.

A move the engine did not take (rejected, ``invalid``: garbage, a malformed call, a control token)
is seen only by the role that made it, with the error notice that answers it (addressed to that
role alone): for every other role the move did not happen, so none reacts to it, and no other
side's sample holds it. Nor does another role's blank text reach R (the engine rejects a turn with
no text and no call too; blank text beside calls says nothing). The export reads records the same
way (:func:`simworld.export.source.perspective_dicts`, :func:`simworld.export.source.render_events`).
"""

from __future__ import annotations

from collections.abc import Sequence

from simworld.types import Message


def visible_to(ev: Message, role: str) -> bool:
    """Does `role` see event `ev` at all: addressed to it or to everyone, and not another role's
    rejected move (:mod:`simworld.perspective`)?"""
    return (ev.audience is None or ev.audience == role) and (ev.speaker == role or not ev.invalid)


def perspective(events: Sequence[Message], role: str, system: str | None = None) -> list[Message]:
    out: list[Message] = []
    if system:
        out.append(Message(role="system", content=system))
    for ev in events:
        if not visible_to(ev, role):
            continue
        if ev.speaker == role:
            if ev.role == "tool":
                out.append(Message(role="tool", content=ev.content, tool_call_id=ev.tool_call_id,
                                   name=ev.name, error=ev.error))
            else:
                out.append(Message(role="assistant", content=ev.content, tool_calls=list(ev.tool_calls),
                                   invalid=ev.invalid))
            continue
        if ev.role == "tool" or not ev.content or ev.content.isspace():
            continue
        if out and out[-1].role == "user":
            prev = out[-1]
            out[-1] = Message(role="user", content=prev.content + "\n\n" + ev.content)
        else:
            out.append(Message(role="user", content=ev.content))
    return out
