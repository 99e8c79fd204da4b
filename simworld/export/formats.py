"""Training-data formats. Each turns a :class:`~simworld.export.source.Sample` into one JSON line.

The trainer formats (``openai``, ``trl``, ``sharegpt``, ``dpo``: :data:`SIDECAR_FORMATS`) write
only what their trainer reads; a sample's id, perspective, scores, provenance and ``synthetic``
(:func:`sample_metadata`) go in a metadata file beside the data, one line per sample in the same
order. OpenAI's per-line schema holds ``messages``, ``tools``, ``parallel_tool_calls`` and
``functions`` only: inline, the metadata would cost the upload. ``llama3``, simworld's own format,
keeps it in the line. Metadata has the same keys, with the same types, in every line, whatever
scenario a sample comes from (the maps keyed by names a scenario decides are JSON text:
:func:`~simworld.export.source.scores_written`, :func:`~simworld.export.source.provenance_of`), so
that Hugging Face ``datasets`` (which TRL and LLaMA-Factory load JSONL with, in blocks typed like
the first) reads an export mixing scenarios as one table.

* ``llama3``: ``{"id", "perspective", "text", "messages", "tools", "scores", "mask", "provenance",
  "synthetic"}``. `text` is Meta's Llama 3.1 format (:mod:`simworld.llama3.format`) and equals
  the decoded output of llama-models' ``ChatFormat`` for `messages`; `mask` holds the character
  spans ``[start, end)`` of the perspective's (valid) assistant turns, end token included. With
  tokenization, ``tokens`` and ``token_mask`` too (:mod:`simworld.export.masks`). An external
  (``--mix``) conversation's system message has a ``Today Date`` only when the sample has a date
  (``--mix-today``); with no date, no tools and no system prompt of its own, it has none.
* ``openai``: chat fine-tuning lines: ``messages`` (assistant ``tool_calls`` with ``arguments`` as
  a JSON string, ``tool`` messages with ``tool_call_id``), top-level ``tools``; an assistant turn
  the environment rejected gets ``"weight": 0``.
* With ``mask_failed`` (``--mask-failed-calls``), an assistant turn whose tool call got an error
  result stays in the conversation but out of the loss: llama3 marks it ``invalid`` (out of `mask`
  and `token_mask`; a parallel-call turn is split, so each call is judged alone), openai gives its
  message ``"weight": 0`` (any failed call of the message).
* ``trl``: Hugging Face conversational format (``arguments`` as a dict), shaped for the Llama
  3.1 chat template shipped with TRL: one tool call per assistant message (parallel calls are
  split, each followed by its result); the text of a turn that also calls a tool is an assistant
  message of its own right before the call (the template renders only the call of a message
  with ``tool_calls``); no empty ``tools`` or ``tool_calls`` keys, and the conversation opens
  with a user turn (an empty one is added for a role that spoke first).
* ``sharegpt``: LLaMA-Factory style: ``conversations`` of ``human`` / ``gpt`` / ``function_call``
  / ``observation`` alternating as LLaMA-Factory requires, ``system``, ``tools`` as a JSON string.
  One call per ``function_call`` turn (as in ``llama3``); the text of a turn that also calls a
  tool goes in front of its call as ``TEXT<tool_call>{"name", "arguments"}</tool_call>``, the
  form LLaMA-Factory (0.9.4 on) reads as text followed by the call; a text holding
  ``<tool_call>`` itself cannot be told apart from the call and is left out
  (:func:`sharegpt_texts_left_out` counts them).
* ``dpo``: see :mod:`simworld.export.dpo`.
* An assistant turn the environment did not take (rejected: ``invalid``; or with no text and no
  call, which the engine answers with an error notice but records unmarked:
  :func:`~simworld.llama3.format.invalid_reason`) is never trained on: ``llama3`` keeps it in
  `text` and `messages`, out of `mask`; ``openai`` gives it ``"weight": 0``, or leaves it out with
  the notice answering it when it cannot be written (no content, or calls never run); ``trl``,
  ``sharegpt`` and ``dpo`` leave it and its notice out (:func:`without_invalid_turns`), and a
  sample left with no assistant turn is not written. It is in its maker's sample only: another
  role never saw it (:mod:`simworld.perspective`), so no format of that role's sample holds it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

import orjson

from simworld.export.curation import WEIGHT_ZERO, xxh64
from simworld.export.source import Sample, render_events, training_view_and_tail
from simworld.llama3.format import (BEGIN, EOT, HEADERS, contains_special_token, conversation_messages, invalid_reason,
                                    llama3_messages, failed_call_ids, render_normalized, system_content)

FORMATS = ("llama3", "openai", "trl", "sharegpt", "dpo")
SIDECAR_FORMATS = frozenset(("openai", "trl", "sharegpt", "dpo"))
"""The formats whose sample metadata goes in a file beside the data (see the module docstring)."""


def sample_metadata(sample: Sample) -> dict[str, Any]:
    """A sample's line of the metadata file: what identifies it and where it came from."""
    return {"id": sample.id, "perspective": sample.perspective, "scores": sample.written_scores,
            "provenance": sample.provenance, "synthetic": sample.synthetic}


def _call_parts(call: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    return call.get("id") or "", call["name"], call.get("arguments") or {}


def llama3_line(sample: Sample, tokenizer: Any = None, mask_failed: bool = False) -> dict[str, Any]:
    normalized = llama3_messages(sample.messages, sample.tools, sample.today, mask_failed, sample.tail)
    if not normalized[0]["content"]:  # no date, tools or prompt (an external conversation): no system message
        del normalized[0]
    text, spans = render_normalized(normalized)
    line = {"id": sample.id, "perspective": sample.perspective, "text": text, "messages": normalized,
            "tools": sample.tools_openai, "scores": sample.written_scores, "mask": spans,
            "provenance": sample.provenance, "synthetic": sample.synthetic}
    if tokenizer is not None:
        from simworld.export.masks import token_masks

        line["tokens"], line["token_mask"] = token_masks(normalized, tokenizer)
    return line


class _SystemHead:
    """What the system messages of one tool set and date share: everything before the role's prompt
    (environment, dates, tool definitions), serialized once. JSON string escaping works character by
    character, so a system message's serialized forms are the head's followed by its prompt's."""

    __slots__ = ("tools", "tools_openai", "content", "text_open", "content_open", "tools_json", "digest", "special")

    def __init__(self, tools: list[Any], tools_openai: list[Any], today: Any) -> None:
        if today is None:  # (its content would not open the system message; llama3_line renders those)
            raise ValueError("the serialized llama3 line needs a sample with a date")
        self.tools, self.tools_openai = tools, tools_openai
        self.content = system_content("", tools, today)
        self.text_open = orjson.dumps(BEGIN + HEADERS["system"] + self.content)[:-1]  # quote, escaped text
        self.content_open = b'{"role":"system","content":' + orjson.dumps(self.content)[:-1]
        self.tools_json = orjson.dumps(tools_openai)
        self.digest = hashlib.blake2b(self.text_open, digest_size=16).digest()
        self.special = contains_special_token(self.content)


class _SystemPart:
    """A system message: its content, its serialized forms (in pieces: the shared head's, then the
    prompt's), and whether the content (prompt or tool definitions) holds special tokens."""

    __slots__ = ("head", "prefix_len", "text_pieces", "message_pieces", "special", "_seed")

    def __init__(self, system_prompt: str, head: _SystemHead) -> None:
        self.head = head
        rest = "\n\n" + system_prompt if system_prompt else ""
        # The content is head.content + rest (= system_content(system_prompt, tools, today)).
        self.prefix_len = len(BEGIN) + len(HEADERS["system"]) + len(head.content) + len(rest) + len(EOT)
        escaped = orjson.dumps(rest)[1:-1]
        tail = escaped + _EOT_JSON
        self.text_pieces = (head.text_open, tail)  # the opening quote and the escaped prefix
        self.message_pieces = (head.content_open, escaped + b'"}')
        # The prompt and the tool definitions (no token spans the blank line between them).
        self.special = head.special or contains_special_token(rest)
        self._seed: int | None = None

    @property
    def seed(self) -> int:
        """64 bits of a digest of the whole system message: the head's, and XXH64 of the prompt under
        it (made when deduplication first asks; a negotiation's prompts differ per episode)."""
        if self._seed is None:
            tail = self.text_pieces[1]
            head = int.from_bytes(self.head.digest[:8], "little", signed=True)
            self._seed = int(xxh64(tail, head)) if len(tail) > len(_EOT_JSON) else head
        return self._seed


_EOT_JSON = orjson.dumps(EOT)[1:-1]  # (JSON escapes none of its characters)


_HEADS: dict[tuple[int, int, Any], _SystemHead] = {}
_SYSTEMS: dict[tuple[str, int, int, Any], _SystemPart] = {}


def system_part(sample: Sample) -> _SystemPart:
    """The cached system part of a sample: the same role in the same world shares one (the system
    message and tool definitions are most of a sample's text, and are serialized once), and roles
    whose prompts differ per episode (a negotiator's private terms) share the tool definitions."""
    prompt = sample.system_prompt
    tools, tools_openai = sample.tools, sample.tools_openai
    key = (prompt, id(tools), id(tools_openai), sample.today)
    part = _SYSTEMS.get(key)
    if part is None or part.head.tools is not tools or part.head.tools_openai is not tools_openai:
        hkey = key[1:]
        head = _HEADS.get(hkey)
        if head is None or head.tools is not tools or head.tools_openai is not tools_openai:
            if len(_HEADS) >= 256:
                _HEADS.clear()
            head = _HEADS[hkey] = _SystemHead(tools, tools_openai, sample.today)
        if len(_SYSTEMS) >= 256:
            _SYSTEMS.clear()
        part = _SYSTEMS[key] = _SystemPart(prompt, head)
    return part


def llama3_line_bytes(sample: Sample, mask_failed: bool = False) -> bytes:
    """`llama3_line` serialized, fast: the system part's serialized forms are reused across samples."""
    return b"".join(llama3_line_parts(sample, mask_failed).pieces)


class Llama3Line(NamedTuple):
    """A serialized `llama3_line`, in pieces."""

    pieces: list[bytes]
    """Byte pieces to join. The system part's serialized forms are pieces themselves (shared
    across samples, so they are written out, never copied)."""
    text_json: bytes
    """The serialized text after the system message."""
    system: _SystemPart
    """The system message: its `seed` and `text_json` identify the sample's full text for exact
    deduplication (:meth:`~simworld.export.curation.Deduplicator.keep`), without serializing its
    messages again or hashing the long shared prefix per sample."""
    special: bool
    """False only when no message content and no call argument can hold a special token (no
    ``<|`` anywhere in the serialized messages, and a clean system prompt)."""
    turns: int
    """Assistant turns of the text (a turn with parallel calls is one turn per call)."""


def llama3_line_parts(sample: Sample, mask_failed: bool = False) -> Llama3Line:
    """`llama3_line`, serialized from the cached system part and one pass over the conversation
    (over the record's events when the sample has them: :func:`~simworld.export.source.render_events`)."""
    part = system_part(sample)
    rendered = None
    if sample.record is not None and sample.rendered is None:
        rendered = sample.rendered = render_events(sample.record.get("events") or [], sample.perspective,
                                                   part.prefix_len, mask_failed)
    if rendered is not None:
        conv, text, spans, turns = rendered.conversation, rendered.text, rendered.spans, rendered.turns
    else:
        msgs = sample.messages
        if msgs and msgs[0]["role"] == "system":
            msgs = msgs[1:]
        conv = conversation_messages(msgs, mask_failed, sample.tail)
        text, spans = render_normalized(conv, begin=False, offset=part.prefix_len)
        turns = sum(1 for m in conv if m["role"] == "assistant")
    messages = orjson.dumps(conv)
    text_json = orjson.dumps(text)
    # The fields before the text and after the tools, each run serialized as one object, its braces cut.
    head = orjson.dumps({"id": sample.id, "perspective": sample.perspective})
    tail = orjson.dumps({"scores": sample.written_scores, "mask": spans, "provenance": sample.provenance,
                         "synthetic": bool(sample.synthetic)})
    pieces = [
        head[:-1], b',"text":', *part.text_pieces, text_json[1:],
        b',"messages":[', *part.message_pieces, b"," if conv else b"", messages[1:-1],
        b'],"tools":', part.head.tools_json, b",", tail[1:],
    ]
    # (memchr finds a "<" at once or not at all: most conversations hold none, and "<|" is a slower search)
    special = part.special or (b"<" in messages and b"<|" in messages)
    return Llama3Line(pieces, text_json, part, special, turns)


INVALID_NOTICE = "Error: invalid action: "
"""How the engine's notice answering a turn it did not take begins; the turn's ``invalid`` reason
follows (:meth:`simworld.episode.Episode.step`; ``empty turn`` for one with no text and no call)."""


def _says_nothing(m: dict[str, Any]) -> bool:
    return not m.get("tool_calls") and not (m["content"] or "").strip()


def _left_out_of_openai(m: dict[str, Any], reason: str) -> bool:
    """OpenAI takes no assistant message without content or calls, nor calls without their results
    (those of a rejected turn were never run); another rejected turn stays, with weight 0."""
    return _says_nothing(m) or (bool(m.get("tool_calls")) and reason != WEIGHT_ZERO)


def _left_out_of_trl(m: dict[str, Any], reason: str) -> bool:
    """No per-turn loss: every turn that is not to be learnt is left out, except an external
    conversation's weight-0 turns that say something (context its author kept)."""
    return reason != WEIGHT_ZERO or _says_nothing(m)


_LEFT_OUT = {"openai": _left_out_of_openai, "trl": _left_out_of_trl, "sharegpt": _left_out_of_trl,
             "dpo": _left_out_of_trl}
"""Which invalid assistant turns (:func:`~simworld.llama3.format.invalid_reason`) each format leaves out."""


def _is_left_out(leave_out: Any, m: dict[str, Any]) -> str | None:
    """The ``invalid`` reason of `m` when it is an assistant turn `leave_out` (a :data:`_LEFT_OUT`
    rule) leaves out, else None."""
    if m["role"] != "assistant":
        return None
    reason = invalid_reason(m)
    return reason if reason is not None and leave_out(m, reason) else None


def turns_left_out(fmt: str, messages: list[dict[str, Any]]) -> int:
    """How many assistant turns of a training view `fmt` leaves out as invalid (the card's
    ``invalid_turns_left_out``): see :func:`without_invalid_turns`."""
    leave_out = _LEFT_OUT.get(fmt)
    if leave_out is None:
        return 0
    return sum(1 for m in messages if _is_left_out(leave_out, m) is not None)


def without_invalid_turns(fmt: str, messages: list[dict[str, Any]], tail: list[dict[str, Any]] | tuple[()] = ()
                          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | tuple[()]]:
    """A training view (and its `tail`, :func:`~simworld.export.source.training_view_and_tail`)
    without the invalid assistant turns `fmt` leaves out, each with the world notice that answers it
    (the next message, when it is that notice: :data:`INVALID_NOTICE` and the reason), so that the
    conversation reads as if the move had not been made; cut again after its last assistant turn
    (what the cut leaves out goes in front of the tail). With no assistant turn left, the view is
    empty: the sample is not written."""
    leave_out = _LEFT_OUT[fmt]
    out: list[dict[str, Any]] = []
    notice = None  # the notice that answers the turn just left out
    for m in messages:
        if notice is not None:
            if m["role"] == "user" and (m["content"] == notice or m["content"].startswith(notice + "\n\n")):
                rest = m["content"][len(notice) + 2:]  # (another speaker's text merged after it)
                notice = None
                if rest:
                    out.append({**m, "content": rest})
                continue
            notice = None
        reason = _is_left_out(leave_out, m)
        if reason is not None:
            notice = INVALID_NOTICE + reason
            continue
        out.append(m)
    if len(out) == len(messages):
        return messages, tail
    view, cut = training_view_and_tail(out)
    return view, [*cut, *tail] if cut else tail


def openai_messages(messages: list[dict[str, Any]], mask_failed: bool = False,
                    tail: list[dict[str, Any]] | tuple[()] = ()) -> list[dict[str, Any]]:
    """A training view's messages in the form of ``--format openai`` (see the module docstring);
    none when no assistant turn is left."""
    messages, tail = without_invalid_turns("openai", messages, tail)
    failed = failed_call_ids([*messages, *tail]) if mask_failed else ()
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "assistant":
            msg: dict[str, Any] = {"role": "assistant"}
            calls = m.get("tool_calls")
            if calls:
                if m["content"]:
                    msg["content"] = m["content"]
                msg["tool_calls"] = [{"id": cid, "type": "function",
                                      "function": {"name": name, "arguments": json.dumps(args)}}
                                     for cid, name, args in map(_call_parts, calls)]
            else:
                msg["content"] = m["content"]
            if invalid_reason(m) or (calls and any(c.get("id") in failed for c in calls)):
                msg["weight"] = 0
            out.append(msg)
        elif role == "tool":
            out.append({"role": "tool", "tool_call_id": m.get("tool_call_id") or "", "content": m["content"]})
        else:
            out.append({"role": role, "content": m["content"]})
    return out


def openai_line(sample: Sample, mask_failed: bool = False) -> dict[str, Any] | None:
    """The sample's ``--format openai`` line; None when it has no assistant turn to write."""
    messages = openai_messages(sample.messages, mask_failed, sample.tail)
    if not messages:
        return None
    line: dict[str, Any] = {"messages": messages}
    if sample.tools_openai:
        line["tools"] = sample.tools_openai
    return line


def _opens_with_user(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    head = 1 if messages and messages[0]["role"] == "system" else 0
    if head < len(messages) and messages[head]["role"] != "user":
        return messages[:head] + [{"role": "user", "content": ""}] + messages[head:]
    return messages


def trl_messages(messages: list[dict[str, Any]], tail: list[dict[str, Any]] | tuple[()] = ()) -> list[dict[str, Any]]:
    """A training view's messages in the form of ``--format trl`` (see the module docstring); `tail`:
    what the view's cut left out (:func:`~simworld.export.source.training_view_and_tail`). Empty
    when no assistant turn is left (:func:`without_invalid_turns`)."""
    out: list[dict[str, Any]] = []
    view, tail = without_invalid_turns("trl", messages, tail)
    for m in _opens_with_user(conversation_messages(view, tail=tail)):
        role = m["role"]
        if role == "assistant" and m.get("tool_calls"):
            if m["content"].strip():  # the template shows only the call of a message with tool_calls
                out.append({"role": "assistant", "content": m["content"]})
            _, name, args = _call_parts(m["tool_calls"][0])
            out.append({"role": "assistant", "content": "",
                        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]})
        elif role == "tool":
            item = {"role": "tool", "content": m["content"]}
            if m.get("name"):
                item["name"] = m["name"]
            out.append(item)
        else:
            out.append({"role": role, "content": m["content"]})
    return out


def trl_line(sample: Sample) -> dict[str, Any] | None:
    """The sample's ``--format trl`` line; None when it has no assistant turn to write."""
    messages = trl_messages(sample.messages, sample.tail)
    if not messages:
        return None
    line: dict[str, Any] = {"messages": messages}
    if sample.tools_openai:
        line["tools"] = sample.tools_openai
    return line


_IN = ("human", "observation")
_TOOL_CALL_OPEN, _TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


def _keeps_call_text(text: str) -> bool:
    """Whether a sharegpt function_call turn can carry `text` before its call: LLaMA-Factory takes
    the first ``<tool_call>`` of the value for the call's."""
    return bool(text.strip()) and _TOOL_CALL_OPEN not in text


def _function_call_value(text: str, name: str, arguments: dict[str, Any]) -> str:
    call = json.dumps({"name": name, "arguments": arguments})
    if not _keeps_call_text(text):
        return call
    # "<\/" is "</" in JSON: no string in the call can end the tag early.
    return text + _TOOL_CALL_OPEN + call.replace("</", "<\\/") + _TOOL_CALL_CLOSE


def sharegpt_texts_left_out(messages: list[dict[str, Any]]) -> int:
    """How many texts of turns that call a tool ``--format sharegpt`` leaves out (those holding
    ``<tool_call>``)."""
    return sum(1 for m in without_invalid_turns("sharegpt", messages)[0] if m["role"] == "assistant"
               and m.get("tool_calls") and m["content"].strip() and not _keeps_call_text(m["content"]))


def sharegpt_line(sample: Sample) -> dict[str, Any] | None:
    """The sample's ``--format sharegpt`` line; None when it has no assistant turn to write."""
    system = ""
    turns: list[dict[str, str]] = []

    def put(tag: str, value: str) -> None:
        slot_in = len(turns) % 2 == 0  # LLaMA-Factory: even slots human/observation, odd gpt/function_call
        if (tag in _IN) != slot_in:
            if tag in _IN:  # two inputs in a row: one input
                turns[-1]["value"] = (turns[-1]["value"] + "\n\n" + value).strip("\n")
                return
            turns.append({"from": "human", "value": ""})  # two outputs in a row (or a role that spoke first)
        turns.append({"from": tag, "value": value})

    view, tail = without_invalid_turns("sharegpt", sample.messages, sample.tail)
    if not view:
        return None
    for m in conversation_messages(view, tail=tail):
        role = m["role"]
        if role == "system":
            system = m["content"]
        elif role == "user":
            put("human", m["content"])
        elif role == "tool":
            put("observation", m["content"])
        elif m.get("tool_calls"):
            _, name, args = _call_parts(m["tool_calls"][0])
            put("function_call", _function_call_value(m["content"], name, args))
        else:
            put("gpt", m["content"])
    tools = [t["function"] for t in sample.tools_openai]
    return {"conversations": turns, "system": system, "tools": json.dumps(tools) if tools else ""}


def assistant_turns(fmt: str, line: dict[str, Any]) -> int:
    """The assistant turns a formatted line holds, as written (what the dataset card counts)."""
    if fmt == "sharegpt":
        return sum(1 for t in line["conversations"] if t["from"] in ("gpt", "function_call"))
    return sum(1 for m in line["messages"] if m["role"] == "assistant")


def format_line(fmt: str, sample: Sample, tokenizer: Any = None, mask_failed: bool = False) -> dict[str, Any] | None:
    """The sample's line in `fmt`; None when the format leaves it no assistant turn (all were
    invalid: :func:`without_invalid_turns`), and nothing is written."""
    if fmt == "llama3":
        return llama3_line(sample, tokenizer, mask_failed)
    if fmt == "openai":
        return openai_line(sample, mask_failed)
    if fmt == "trl":
        return trl_line(sample)
    if fmt == "sharegpt":
        return sharegpt_line(sample)
    raise ValueError(f"unknown format {fmt!r}")
