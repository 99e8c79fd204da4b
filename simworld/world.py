"""World framework: columnar data, per-episode overlay state, tools, tool graph.

A world is generated once per `(params, seed)` as :class:`WorldData` (NumPy columns, read-only,
shared by every episode in the process). An episode works on a :class:`State`: an overlay that
records only the rows it changed (and rows it appended), so that snapshot, restore, state hash and
expected-state diff cost what the episode touched, not what the world holds. The hash also covers
the base world's fingerprint.

Tools are plain functions whose first parameter is a :class:`ToolContext`; their other parameters
(annotated, with `Field` descriptions) become a pydantic arguments model and the JSON Schema a model
sees. The compute core of each tool is a ``@numba.njit(cache=True)`` kernel in the world's module.
A tool signals failure with :class:`ToolError`; the state is then restored to what it was before
the call, whatever the tool had written.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

import networkx as nx
import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from simworld.errors import EpisodeCrash, SimworldError, bug_text, exception_text, suggest
from simworld.types import FieldDiff, ToolCall, ToolSpec


class ToolError(Exception):
    """Raised by a tool for a failed call (bad id, policy violation). Becomes an error result."""


class ToolCrash(Exception):
    """A tool failed by a bug of its world, not by its input: it raised another exception than
    :class:`ToolError` (the cause, chained), or answered what JSON cannot hold (a set, a NaN).

    ``str()`` names the tool and the call: ``in tool get_balance (call get_balance{"acct":34}):
    KeyError: 'boom'``; a command stops on it with :func:`episode_crash`.
    """

    def __init__(self, call: ToolCall, problem: str) -> None:
        self.tool = call.name
        self.problem = problem
        args = orjson.dumps(call.arguments, default=repr, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        super().__init__(f"in tool {call.name} (call {call.name}{args if len(args) <= 80 else '{…}'}): {problem}")


def episode_crash(episode_id: str, exc: BaseException, when: str = "") -> EpisodeCrash:
    """The one-line error (exit 1) for a bug `exc` raised inside an episode, `when` it happened (" on
    replay"): ``episode ID crashed{when} in tool peek (call peek{"row":1}): KeyError: 'boom'`` for a
    :class:`ToolCrash`, ``episode ID crashed{when}: Type: message`` for another exception, with the
    ``$SIMWORLD_DEBUG`` hint (:func:`~simworld.errors.bug_text`)."""
    where = f" {exc}" if isinstance(exc, ToolCrash) else f": {exception_text(exc)}"
    return EpisodeCrash(bug_text(exc, f"episode {episode_id} crashed{when}{where}"))


# ----------------------------------------------------------------------------------------------
# Data and state


class Table:
    """Named columns of equal length. 2-D columns hold fixed-width lists (padded, e.g. with -1)."""

    __slots__ = ("name", "columns", "n")

    def __init__(self, name: str, columns: dict[str, np.ndarray]) -> None:
        lengths = {len(c) for c in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"table {name}: columns of different lengths {sorted(lengths)}")
        self.name = name
        self.columns = columns
        self.n = lengths.pop() if lengths else 0
        for col in columns.values():
            col.setflags(write=False)

    def __getitem__(self, col: str) -> np.ndarray:
        return self.columns[col]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.columns.values())


class WorldData:
    """The generated, immutable part of a world: tables, vocabularies, indexes, fingerprint."""

    def __init__(
        self,
        tables: dict[str, Table],
        vocab: dict[str, list[str]] | None = None,
        indexes: dict[str, Any] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.tables = tables
        self.vocab = vocab or {}
        self.indexes = indexes or {}
        self.meta = meta or {}
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for tname in sorted(self.tables):
            table = self.tables[tname]
            for cname in sorted(table.columns):
                col = np.ascontiguousarray(table.columns[cname])
                h.update(f"{tname}.{cname}:{col.dtype.str}:{col.shape}".encode())
                h.update(memoryview(col).cast("B"))
        for vname in sorted(self.vocab):
            h.update(vname.encode())
            h.update(orjson.dumps(self.vocab[vname]))
        return h.hexdigest()

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tables.values())


def _plain(value: Any) -> Any:
    """A JSON-able, comparable form of a cell value."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


class State:
    """One episode's view of a world: base data plus an overlay of changed and appended rows.

    * ``get/set`` read and write one cell through the overlay. A write equal to the base value
      removes the patch, so two states with equal content hash equally whatever path led there.
    * ``column`` gives a whole column for kernels: the shared base array when the episode has not
      written it, else a materialised copy.
    * ``append`` adds rows to append-only tables (payment history, offers).
    * ``vars`` holds episode-level scalars (a negotiation's current offer, round number).
    """

    __slots__ = ("data", "patches", "appended", "vars", "_columns")

    def __init__(self, data: WorldData) -> None:
        self.data = data
        self.patches: dict[str, dict[int, dict[str, Any]]] = {}
        self.appended: dict[str, list[dict[str, Any]]] = {}
        self.vars: dict[str, Any] = {}
        self._columns: dict[tuple[str, str], np.ndarray] = {}

    # -- cells
    def get(self, table: str, col: str, row: int) -> Any:
        rows = self.patches.get(table)
        if rows is not None:
            patch = rows.get(row)
            if patch is not None and col in patch:
                return patch[col]
        base = self.data.tables[table]
        if row >= base.n:
            return self.appended[table][row - base.n][col]
        return base.columns[col][row]

    def set(self, table: str, col: str, row: int, value: Any) -> None:
        base = self.data.tables[table]
        if row >= base.n:
            self.appended[table][row - base.n][col] = value
            return
        self._columns.pop((table, col), None)
        if isinstance(value, np.ndarray):
            value = value.copy()
        rows = self.patches.setdefault(table, {})
        if _same(base.columns[col][row], value):
            patch = rows.get(row)
            if patch is not None:
                patch.pop(col, None)
                if not patch:
                    del rows[row]
            return
        rows.setdefault(row, {})[col] = value

    def row(self, table: str, row: int, cols: Iterable[str] | None = None) -> dict[str, Any]:
        names = cols if cols is not None else self.data.tables[table].columns.keys()
        return {c: self.get(table, c, row) for c in names}

    def n_rows(self, table: str) -> int:
        return self.data.tables[table].n + len(self.appended.get(table, ()))

    def append(self, table: str, row: dict[str, Any]) -> int:
        """Append a row to an append-only table; returns its row index."""
        rows = self.appended.setdefault(table, [])
        rows.append(dict(row))
        return self.data.tables[table].n + len(rows) - 1

    def appended_rows(self, table: str) -> list[dict[str, Any]]:
        return self.appended.get(table, [])

    def column(self, table: str, col: str) -> np.ndarray:
        """The whole column as an array, overlay applied (base array itself when untouched)."""
        base = self.data.tables[table].columns[col]
        rows = self.patches.get(table)
        if not rows or not any(col in p for p in rows.values()):
            return base
        key = (table, col)
        cached = self._columns.get(key)
        if cached is None:
            cached = base.copy()
            for r, p in rows.items():
                if col in p:
                    cached[r] = p[col]
            cached.setflags(write=False)
            self._columns[key] = cached
        return cached

    # -- snapshots
    def snapshot(self) -> State:
        """A copy sharing the base data; costs O(rows touched)."""
        other = State(self.data)
        other.patches = {t: {r: {c: (v.copy() if isinstance(v, np.ndarray) else v) for c, v in p.items()}
                             for r, p in rows.items()} for t, rows in self.patches.items()}
        other.appended = {t: [dict(r) for r in rows] for t, rows in self.appended.items()}
        other.vars = orjson.loads(orjson.dumps(self.vars, option=orjson.OPT_SERIALIZE_NUMPY)) if self.vars else {}
        return other

    def restore(self, snap: State) -> None:
        copy = snap.snapshot()
        self.patches, self.appended, self.vars = copy.patches, copy.appended, copy.vars
        self._columns = {}

    # -- hashing and diffs
    def changes(self) -> dict[str, Any]:
        """The canonical content of the overlay: what this episode changed, JSON-able."""
        patches = {
            t: {str(r): {c: _plain(v) for c, v in sorted(p.items())} for r, p in sorted(rows.items()) if p}
            for t, rows in sorted(self.patches.items())
            if rows
        }
        appended = {t: [{c: _plain(v) for c, v in sorted(r.items())} for r in rows]
                    for t, rows in sorted(self.appended.items()) if rows}
        return {"patches": patches, "appended": appended, "vars": self.vars}

    def state_hash(self) -> str:
        body = orjson.dumps(self.changes(), option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
        h = hashlib.blake2b(digest_size=16)
        h.update(self.data.fingerprint.encode())
        h.update(body)
        return h.hexdigest()

    def diff(self, expected: State, row_label: Callable[[str, int], str] | None = None) -> list[FieldDiff]:
        """Field-level differences between this state (actual) and `expected`."""
        label = row_label or (lambda t, r: str(r))
        out: list[FieldDiff] = []
        tables = sorted(set(self.patches) | set(expected.patches))
        for t in tables:
            rows = sorted(set(self.patches.get(t, {})) | set(expected.patches.get(t, {})))
            for r in rows:
                cols = sorted(set(self.patches.get(t, {}).get(r, {})) | set(expected.patches.get(t, {}).get(r, {})))
                for c in cols:
                    a, e = _plain(self.get(t, c, r)), _plain(expected.get(t, c, r))
                    if a != e:
                        out.append(FieldDiff(table=t, row=label(t, r), field=c, expected=e, actual=a))
        for t in sorted(set(self.appended) | set(expected.appended)):
            a_rows = [_canon(r) for r in self.appended.get(t, [])]
            e_rows = [_canon(r) for r in expected.appended.get(t, [])]
            if a_rows != e_rows:
                out.append(FieldDiff(table=t, row="appended", field="rows", expected=e_rows, actual=a_rows))
        if self.vars != expected.vars:
            for k in sorted(set(self.vars) | set(expected.vars)):
                if self.vars.get(k) != expected.vars.get(k):
                    out.append(FieldDiff(table="vars", row="-", field=k, expected=expected.vars.get(k),
                                         actual=self.vars.get(k)))
        return out


def _canon(row: dict[str, Any]) -> dict[str, Any]:
    return {c: _plain(v) for c, v in sorted(row.items())}


# ----------------------------------------------------------------------------------------------
# Tools


@dataclass
class ToolContext:
    """What a tool sees: the episode state, a seeded RNG, the calling role, and episode controls."""

    state: State
    rng: np.random.Generator
    caller: str = ""
    world: World | None = None
    end_turn: bool = False
    end_episode: str | None = None
    notices: list[tuple[str, str]] = field(default_factory=list)

    def notify(self, role: str, text: str) -> None:
        """Deliver `text` to `role` (as a message from the world, seen only by that role)."""
        self.notices.append((role, text))

    def finish_turn(self) -> None:
        self.end_turn = True

    def finish_episode(self, reason: str) -> None:
        self.end_episode = reason


@dataclass
class ToolResult:
    content: str
    error: bool = False
    end_turn: bool = False
    end_episode: str | None = None
    notices: list[tuple[str, str]] = field(default_factory=list)


class Tool:
    """A tool bound to its implementation, its arguments model and its entity declarations."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        consumes: Iterable[str] = (),
        produces: Iterable[str] = (),
        writes: bool = False,
    ) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.description = (description or inspect.getdoc(fn) or self.name).strip()
        self.consumes = tuple(consumes)
        self.produces = tuple(produces)
        self.writes = writes
        self.Args = _args_model(fn, self.name)
        self._spec: ToolSpec | None = None

    @property
    def spec(self) -> ToolSpec:
        if self._spec is None:
            schema = _clean_schema(self.Args.model_json_schema())
            self._spec = ToolSpec(name=self.name, description=self.description.split("\n\n")[0], parameters=schema)
        return self._spec

    def validate(self, arguments: Any) -> BaseModel:
        return self.Args.model_validate(arguments if arguments is not None else {})


def _args_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    sig = inspect.signature(fn)
    hints = inspect.get_annotations(fn, eval_str=True)
    fields: dict[str, Any] = {}
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if i == 0:  # the ToolContext
            continue
        if pname not in hints:  # its schema would be {}: a model is told nothing of what to pass
            raise TypeError(f"tool {name!r}: parameter {pname!r} has no type annotation; annotate it (Any takes "
                            "any JSON value) so that the tool's schema says what it takes")
        ann = hints[pname]
        default = param.default if param.default is not inspect.Parameter.empty else ...
        fields[pname] = (ann, default)
    model_name = "".join(part.capitalize() for part in name.split("_")) + "Args"
    return create_model(model_name, __config__=ConfigDict(extra="forbid", strict=False), **fields)


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema as tool definitions use it: no titles, `additionalProperties: false`."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out = strip(schema)
    out.setdefault("properties", {})
    out.setdefault("required", [])
    out["additionalProperties"] = False
    return out


class _NotJson(Exception):
    """A tool's answer JSON cannot hold; the message says why."""


def _answer_json(out: Any) -> str:
    """A tool's answer as JSON text; raises _NotJson for one JSON cannot hold. orjson writes NaN and
    infinity as null, which would change what the world said: they are refused too."""
    try:
        text = orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        raise _NotJson(f"its answer is not JSON: {exc}") from None
    if b"null" in text:  # (the walk only where a NaN may hide)
        where = _non_finite(out, "")
        if where is not None:
            at = f"holds {where[1]} at {where[0]}" if where[0] else f"is {where[1]}"
            raise _NotJson(f"its answer {at}, which JSON cannot hold (it would be recorded as null)")
    return text.decode()


def _non_finite(value: Any, path: str) -> tuple[str, str] | None:
    """(path, value) of the first NaN or infinity in a tool's answer, or None."""
    if isinstance(value, float | np.floating):
        return None if math.isfinite(value) else (path, str(float(value)))
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            index = np.argwhere(~np.isfinite(value))[0]
            return f"{path}{''.join(f'[{i}]' for i in index)}", str(float(value[tuple(index)]))
        return None
    if is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in fields(value)}
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _non_finite(item, where)
        if found is not None:
            return found
    return None


def format_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "arguments"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unexpected argument"
        elif err.get("type") == "missing":
            msg = "missing required argument"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# World


class NoParams(BaseModel):
    """The parameters of a world or task generator without any: an empty model that refuses every key."""

    model_config = ConfigDict(extra="forbid")


class World:
    """Base class of a world. Subclasses set `Params` (a world without one takes no parameters:
    :class:`NoParams`), implement `build`, and register tools.

    Example::

        @register_world("retail")
        class RetailWorld(World):
            Params = RetailParams

            @classmethod
            def build(cls, params, rng) -> WorldData: ...

        @RetailWorld.tool(consumes=["user_id"], produces=["order_id"])
        def get_user_details(ctx: ToolContext, user_id: Annotated[str, Field(description=...)]): ...
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    """The world's version, stamped in every record: raise it whenever the same params and seed
    build a different world (a new default included), sample other tasks, or a tool answers
    differently, so that `simworld replay` can tell a run recorded by another version from an
    altered record."""
    Params: ClassVar[type[BaseModel]] = NoParams
    tools: ClassVar[dict[str, Tool]]
    _cache: ClassVar[OrderedDict[tuple[str, str, int], tuple[WorldData, BaseModel]]] = OrderedDict()
    CACHE_SIZE: ClassVar[int] = 4

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tools = {}

    def __init__(self, data: WorldData, params: BaseModel, seed: int) -> None:
        self.data = data
        self.params = params
        self.seed = seed

    # -- construction
    @classmethod
    def build(cls, params: BaseModel, rng: np.random.Generator) -> WorldData:
        raise NotImplementedError

    @classmethod
    def load(cls, params: dict[str, Any] | BaseModel | None, seed: int) -> World:
        """The world for `(params, seed)`, generated once per process and shared read-only.

        Loads with equal params share the generated data and the validated params object (caches
        keyed by the params, e.g. per-world tool schemas, then hold across a scenario's variations).
        """
        p = params if isinstance(params, BaseModel) else cls.Params.model_validate(params or {})
        key = (cls.name, p.model_dump_json(), int(seed))
        cached = cls._cache.get(key)
        if cached is None:
            data = cls.build(p, np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED])))
            cls._cache[key] = (data, p)
            while len(cls._cache) > cls.CACHE_SIZE:
                cls._cache.popitem(last=False)
        else:
            cls._cache.move_to_end(key)
            data, p = cached
        return cls(data, p, int(seed))

    def new_state(self) -> State:
        return State(self.data)

    # -- tools
    @classmethod
    def tool(
        cls,
        consumes: Iterable[str] = (),
        produces: Iterable[str] = (),
        writes: bool = False,
        name: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            t = Tool(fn, name=name, consumes=consumes, produces=produces, writes=writes)
            cls.tools[t.name] = t
            return fn

        return deco

    @classmethod
    def tool_specs(cls, names: Iterable[str] | None = None) -> list[ToolSpec]:
        chosen = cls.tools if names is None else names
        return [cls.tools[n].spec for n in chosen]

    def call(self, state: State, call: ToolCall, rng: np.random.Generator, caller: str = "") -> ToolResult:
        """Execute one tool call. Never raises for bad input: errors are results. A bug of the tool
        (an exception other than ToolError, an answer JSON cannot hold) raises :class:`ToolCrash`."""
        tool = self.tools.get(call.name)
        if tool is None:
            return ToolResult(f"Error: unknown tool {call.name!r}{suggest(call.name, self.tools)}", error=True)
        if not isinstance(call.arguments, dict):
            return ToolResult("Error: arguments must be a JSON object", error=True)
        try:
            args = tool.validate(call.arguments)
        except ValidationError as exc:
            return ToolResult(f"Error: {format_validation_error(exc)}", error=True)
        ctx = ToolContext(state=state, rng=rng, caller=caller, world=self)
        before = state.snapshot() if tool.writes else None
        try:
            out = tool.fn(ctx, **args.__dict__)  # the validated field values, by name
            content = out if isinstance(out, str) else _answer_json(out)
        except ToolError as exc:
            if before is not None:
                state.restore(before)
            return ToolResult(f"Error: {exc}", error=True)
        except SimworldError:  # the scenario asks what the world cannot give: the user's to fix, not a bug
            if before is not None:  # (a caller that catches it, as an env user may, sees the state as it was)
                state.restore(before)
            raise
        except Exception as exc:
            if before is not None:
                state.restore(before)
            raise ToolCrash(call, str(exc) if isinstance(exc, _NotJson) else exception_text(exc)) from exc
        return ToolResult(content, end_turn=ctx.end_turn, end_episode=ctx.end_episode, notices=ctx.notices)

    def apply_plan(self, state: State, plan: Iterable[ToolCall], rng: np.random.Generator,
                   caller: str = "") -> State:
        """Apply `plan` to a snapshot of `state`; raises ToolError if a call fails (unsolvable)."""
        expected = state.snapshot()
        for call in plan:
            result = self.call(expected, call, rng, caller=caller)
            if result.error:
                raise ToolError(f"gold plan step {call.name} failed: {result.content}")
        return expected

    # -- episode hooks (worlds override what they need)
    def default_system_prompt(self, kind: str, tools: tuple[str, ...] = ()) -> str:
        """System prompt for a role whose scenario gives none (e.g. the store policy); `tools` are
        the tools the role may call (a prompt should describe no other)."""
        return ""

    def next_speaker(self, state: State, current: str, order: list[str]) -> str:
        """Who acts after `current` hands over the turn (default: round robin in scenario order)."""
        return order[(order.index(current) + 1) % len(order)]

    def finalize_outcome(self, episode: Any, outcome: Any) -> Any:
        """Add world-specific metrics (or a different success rule) to an episode's Outcome."""
        return outcome

    def row_label(self, table: str, row: int) -> str:
        """How a row is named in diffs (worlds override to show ids like '#W0000042')."""
        return str(row)

    @classmethod
    def output_stated(cls, required: str, said: str) -> bool:
        """Is the task's required output `required` stated in `said` (all the assistant side said)?

        By default a number matches by value anywhere and anything else as text
        (:func:`simworld.episode.output_stated`). A world whose outputs can be stated wrongly in the
        right words (one status among several, money charged where it is refunded) checks closer."""
        from simworld.episode import output_stated

        return output_stated(required, said)

    # -- tool graph
    @classmethod
    def tool_graph(cls, names: Iterable[str] | None = None) -> nx.DiGraph:
        """Bipartite graph: entity -> tool (consumes), tool -> entity (produces)."""
        g = nx.DiGraph()
        chosen = list(cls.tools if names is None else names)
        for n in chosen:
            t = cls.tools[n]
            g.add_node(n, kind="tool", writes=t.writes)
            for e in t.consumes:
                g.add_node(e, kind="entity")
                g.add_edge(e, n)
            for e in t.produces:
                g.add_node(e, kind="entity")
                g.add_edge(n, e)
        return g

    @classmethod
    def tool_transitions(cls, names: Iterable[str] | None = None) -> nx.DiGraph:
        """Tool -> tool edges: A -> B when A produces an entity type B consumes."""
        g = cls.tool_graph(names)
        tools = [n for n, d in g.nodes(data=True) if d["kind"] == "tool"]
        out = nx.DiGraph()
        out.add_nodes_from(tools)
        for a in tools:
            for e in g.successors(a):
                for b in g.successors(e):
                    if b != a:
                        out.add_edge(a, b, entity=e)
        return out
