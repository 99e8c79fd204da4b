"""Scenario YAML: schema, loading, validation against the registries, variations, overrides.

`load_scenario(path, overrides)` returns a validated :class:`Scenario` or raises
:class:`~simworld.errors.ScenarioError` listing every problem as
``<yaml path> (line N): <message>`` with a suggestion for misspelt names.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import re
import weakref
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import PydanticSerializationError, to_jsonable_python

from simworld import registry
from simworld.docs_text import doc_summary, summary
from simworld.errors import ScenarioError, SimworldError, counted, one_line, suggest


MAX_SEED = 2**64 - 1  # seeds are unsigned 64-bit (numpy SeedSequence entropy, orjson integers)

SCENARIO_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
"""What a scenario's `name` may hold: it starts episode ids and sample ids, which split on '/'."""


_EMPTY_VARIATION = " has no values"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorldSpec(_Strict):
    type: str = Field(description="Registered world name, e.g. 'retail'.")
    params: dict[str, Any] = Field(default_factory=dict, description="World generation parameters.")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED, description="World seed (default: the scenario "
                             "seed). All episodes share the world generated from it.")


class TaskSpec(_Strict):
    type: str = Field(description="Registered task generator of the world, e.g. 'cancel_pending_order'.")
    params: dict[str, Any] = Field(default_factory=dict, description="Task generator parameters (see "
                                   "docs/scenarios.md for each task's).")


class AgentSpec(BaseModel):
    """`type` names a registered agent; the other keys are that agent's parameters."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Registered agent name, e.g. 'oracle', 'customer', 'llm'.")


class RoleSpec(_Strict):
    kind: Literal["user", "assistant"] = Field(description="'user' speaks as the user; 'assistant' "
                                               "is the tool-using side.")
    agent: AgentSpec = Field(description="Who plays the role: {type: AGENT, ...that agent's parameters}.")
    tools: list[str] = Field(default_factory=list, description="World tools this role may call, each once "
                             "(default: none; a support role needs its lookup and write tools listed).",
                             json_schema_extra={"uniqueItems": True})
    system_prompt: str = Field(default="", description="The role's system prompt (default: the world's prompt "
                               "for the role's kind); the task's brief for the role is appended.")
    persona: str = Field(default="", description="Who plays the role, in words: appended to its system "
                         "prompt as 'Persona: ...'.")


class Scenario(_Strict):
    """A scenario file: one world, one task generator, the roles and their agents, how many episodes."""

    name: str = Field(description="Names the run's episodes: episode ids are NAME-sSEED-INDEX. Letters, digits, "
                      "'_', '.' and '-' only.", json_schema_extra={"pattern": SCENARIO_NAME.pattern})
    description: str = Field(default="", description="Free text for people; not used by the run.")
    world: WorldSpec = Field(description="The world every episode runs in.")
    task: TaskSpec = Field(description="The task generator: each episode samples one task from the world.")
    roles: dict[str, RoleSpec] = Field(description="The roles by name, in turn order after first_speaker; at "
                                       "least one of kind 'assistant'.")
    first_speaker: str = Field(description="The role that acts first (a name from roles).")
    max_turns: int = Field(default=40, ge=1, le=10_000, description="Most actions in an episode (a message, "
                           "with or without tool calls, is one action); then it ends with termination max_turns.")
    scoring: list[str] = Field(default_factory=list, description="Scorers that simworld score and export run "
                               "when none is named (default: every registered scorer; simworld list scorers).",
                               json_schema_extra={"uniqueItems": True})
    episodes: int = Field(default=10, ge=0, description="Episodes of a run (simworld run --episodes overrides it).")
    repeats: int = Field(default=1, ge=1, description="Episodes per task: episode i tries the task (and the "
                         "variation) of group i // repeats again, with its own agent and tool randomness; "
                         "for pass^k.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Run seed: names the episodes and seeds "
                      "them (and the world, unless world.seed is set).")
    today: dt.date = Field(default=dt.date(2024, 9, 1), description="'Today Date' of the Llama 3 system "
                           "prompt (never the wall clock).")
    variations: dict[str, list[Any]] = Field(default_factory=dict, description="dotted.path: [values]; each "
                                             "episode (each task group with repeats) draws one value per path, "
                                             "independently and uniformly, from its own seed.")

    @field_validator("variations")
    @classmethod
    def _nonempty(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in v.items():
            if not values:
                raise ValueError(f"variation {path!r}{_EMPTY_VARIATION}")
        return v

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the scenario (first 16 hex digits).

        `repeats` at its default is left out, so scenarios (and runs) from before the field keep
        their hash.
        """
        return _memo(self, "content_hash", lambda: hashlib.sha256(
            orjson.dumps(self.model_dump(mode="json", exclude=_DEFAULT_REPEATS if self.repeats == 1 else None),
                         option=orjson.OPT_SORT_KEYS)).hexdigest()[:16])

    def role_order(self) -> list[str]:
        """Turn order: the first speaker, then the other roles in declaration order."""
        names = list(self.roles)
        i = names.index(self.first_speaker)
        return names[i:] + names[:i]


_DEFAULT_REPEATS = {"repeats"}

# Validated scenarios are treated as immutable: derived values (content hash, the scenario of each
# variation) are computed once per object, not once per episode.
_MEMO: dict[int, tuple[weakref.ref, dict[Any, Any]]] = {}


def _memo(sc: Scenario, key: Any, compute: Any) -> Any:
    entry = _MEMO.get(id(sc))
    if entry is None or entry[0]() is not sc:
        # (the dict bound now: at interpreter exit the module's globals may be gone when this runs)
        entry = (weakref.ref(sc, lambda _ref, i=id(sc), memo=_MEMO: memo.pop(i, None)), {})
        _MEMO[id(sc)] = entry
    cache = entry[1]
    if key not in cache:
        if len(cache) > 4096:
            cache.clear()
        cache[key] = compute()
    return cache[key]


def json_schema(strict: bool = False) -> dict[str, Any]:
    """JSON Schema (Draft 2020-12) of the scenario format, for editors.

    The names registered when it is called (the built-ins and the plugins loaded now from
    ``$SIMWORLD_PLUGINS`` and ``simworld.plugins`` entry points) are listed, each with the first
    paragraph of its docstring: worlds for ``world.type``; tasks, tools and agents for ``task.type``,
    ``roles.*.tools`` and ``roles.*.agent.type``, narrowed to those of the scenario's world
    (``if``/``then`` on ``world.type``) and, for agents, to those that play the role's kind;
    scorers for ``scoring``.

    Each name's parameters follow from its pydantic ``Params`` model (one ``$defs`` entry per
    model): ``world.params`` from the world's, ``task.params`` from the task generator's (tasks are
    per world) and a role's ``agent`` mapping from the agent's (``type`` and its parameters), each
    under an ``if`` on the name. An unknown name leaves its parameters open; ``variations`` (dotted
    paths into the scenario) stays open too: ``simworld validate`` checks each value in place.

    By default a name is ``anyOf`` a listed name (offered for completion, with its description)
    or any string, so a plugin registered after the schema was written is not marked as an error
    in every scenario that uses it; ``simworld validate`` checks the names and suggests the nearest.
    With `strict` the names are an ``enum``: an editor flags a misspelt or unregistered name, and
    a task, tool or agent of another world, as you type.
    """
    registry.load_builtins()
    worlds = _by_params({n: c.Params for n, c in registry.WORLDS.items()})
    tasks = {w: _by_params({n: c.Params for n, c in registry.TASKS.get(w, {}).items()}) for w in registry.WORLDS}
    agents_by_params = _by_params({n: c.Params for n, c in registry.AGENTS.items()})
    models = {m for by in (worlds, agents_by_params, *tasks.values()) for m in by}
    refs, defs = _model_schemas(Scenario, sorted(models, key=lambda m: (m.__module__, m.__qualname__)))
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "World, task, tool, agent and scorer names registered when `simworld schema` wrote this ("
                    + ("an enum: others are errors" if strict else "suggested: others are accepted, and "
                       "simworld validate checks them") + "); write it again after adding a plugin.",
        **defs.pop(refs[Scenario]["$ref"].rsplit("/", 1)[1]),
        "title": "simworld scenario",  # (pydantic's title is the class name)
        "$defs": defs}
    agents = {name: doc_summary(cls) for name, cls in registry.AGENTS.items()}
    task_names = {name: f"{world}: {doc_summary(cls)}" for world in registry.WORLDS
                  for name, cls in registry.TASKS.get(world, {}).items()}
    tools = {name: f"{world}: {summary(tool.spec.description)}" for world, cls in registry.WORLDS.items()
             for name, tool in cls.tools.items()}
    named = [(defs["WorldSpec"]["properties"]["type"], {n: doc_summary(c) for n, c in registry.WORLDS.items()}),
             (defs["TaskSpec"]["properties"]["type"], task_names),
             (defs["AgentSpec"]["properties"]["type"], agents),
             (defs["RoleSpec"]["properties"]["tools"]["items"], tools),
             (schema["properties"]["scoring"]["items"], {n: doc_summary(f) for n, f in registry.SCORERS.items()})]
    for node, described in named:
        node.update(_name_choice(described, strict))
    _add_rules(defs["WorldSpec"], [_params_of("world", names, refs[m]) for m, names in worlds.items()])
    _add_rules(defs["AgentSpec"], [_params_rule("agent", names, refs[m]) for m, names in agents_by_params.items()])
    per_world = [_world_names(world, cls, agents, strict, [_params_of("task", names, refs[m], f" of world {world!r}")
                                                           for m, names in tasks[world].items()])
                 for world, cls in sorted(registry.WORLDS.items())]
    _add_rules(schema, per_world)
    return _without_ref_siblings(schema)


def _by_params(params: dict[str, Any]) -> dict[type[BaseModel], list[str]]:
    """The names of each Params model (several names may share one), sorted; a Params that is not a
    pydantic model is left out (its parameters stay open)."""
    out: dict[type[BaseModel], list[str]] = {}
    for name, model in sorted(params.items()):
        if isinstance(model, type) and issubclass(model, BaseModel):
            out.setdefault(model, []).append(name)
    return out


def _named(kind: str, names: list[str], where: str = "") -> str:
    return f"{kind}{'s' if len(names) > 1 else ''} {', '.join(map(repr, names))}{where}"


def _params_rule(kind: str, names: list[str], then: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``if type is one of names then``: the parameters of those names (of this kind, e.g. "agent")."""
    text = _named(kind, names, where)
    match = _prop(text[0].upper() + text[1:] + ".",
                  **({"const": names[0]} if len(names) == 1 else {"enum": names}))
    return {"if": {"properties": {"type": match}, "required": ["type"]}, "then": then}


def _params_of(kind: str, names: list[str], ref: dict[str, str], where: str = "") -> dict[str, Any]:
    """The rule that `params` next to `type` holds the parameters of those names."""
    return _params_rule(kind, names, {"properties": {"params": _prop(
        f"Parameters of {_named(kind, names, where)} (docs/scenarios.md lists them).", **ref)}}, where)


def _add_rules(node: dict[str, Any], rules: list[dict[str, Any]]) -> None:
    if rules:
        node["allOf"] = node.get("allOf", []) + rules


class _EditorSchema(GenerateJsonSchema):
    """pydantic's JSON Schema for editors: no titles made up from field names ("N Orders" over "Number
    of orders."); a field a subclass declares again only to change its default keeps its base's
    description; a type JSON Schema cannot express (a plugin's arbitrary class) accepts anything
    instead of failing the whole schema, and so does a default that JSON cannot hold."""

    ignored_warning_kinds = {"non-serializable-default", "skipped-choice"}

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> dict[str, Any]:
        return {"$comment": "Any value here: JSON Schema cannot describe this type; simworld validate checks it."}

    def model_schema(self, schema: Any) -> dict[str, Any]:
        from simworld.reference import _field_description

        out = super().model_schema(schema)
        cls = schema["cls"]
        keys = {f.validation_alias if isinstance(f.validation_alias, str) else (f.alias or name): name
                for name, f in getattr(cls, "model_fields", {}).items()}
        for key, prop in out.get("properties", {}).items():
            if "description" not in prop:
                prop["description"] = (_field_description(cls, keys[key]) if key in keys else "") or \
                    f"A parameter of {cls.__name__} (its code does not describe it)."
        return out


def _model_schemas(root: type[BaseModel], models: list[type[BaseModel]]
                   ) -> tuple[dict[type[BaseModel], dict[str, str]], dict[str, Any]]:
    """``{"$ref": ...}`` of each model, and the ``$defs`` they point into: one entry per model, under a
    unique name (pydantic qualifies a class name that two models share with its module), with a
    unique title. A model whose schema cannot be made at all is left out (its parameters stay open)."""
    def generate(ms: list[type[BaseModel]]) -> tuple[dict[Any, Any], dict[str, Any]]:
        refs, top = models_json_schema([(m, "validation") for m in [root, *ms]], schema_generator=_EditorSchema)
        return {m: ref for (m, _mode), ref in refs.items()}, top.get("$defs", {})

    try:
        refs, defs = generate(models)
    except Exception:  # a plugin's Params pydantic cannot describe: keep the others
        usable = []
        for m in models:
            try:
                m.model_json_schema(schema_generator=_EditorSchema)
                usable.append(m)
            except Exception:
                pass
        refs, defs = generate(usable)
    titles = [d.get("title") for d in defs.values()]
    for key, d in defs.items():
        if titles.count(d.get("title")) > 1:
            d["title"] = key
    return refs, dict(sorted(defs.items()))


_DATA_KEYWORDS = {"default", "examples", "const", "enum", "markdownEnumDescriptions"}
_SCHEMAS_BY_NAME = {"properties", "patternProperties", "dependentSchemas", "$defs"}


def _without_ref_siblings(schema: Any) -> Any:
    """`schema` with each ``$ref`` that has sibling keywords (a field's description, its default)
    moved into an ``allOf``: an editor that reads the schema as draft-07 ignores a ``$ref``'s siblings."""
    if isinstance(schema, list):
        return [_without_ref_siblings(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            out[key] = value
        elif key in _SCHEMAS_BY_NAME and isinstance(value, dict):
            out[key] = {name: _without_ref_siblings(s) for name, s in value.items()}
        else:
            out[key] = _without_ref_siblings(value)
    if "$ref" in out and len(out) > 1:
        out["allOf"] = [{"$ref": out.pop("$ref")}, *out.get("allOf", [])]
    return out


def _name_choice(described: dict[str, str], strict: bool) -> dict[str, Any]:
    """One registered name of `described` (name -> description): an enum when `strict`, else
    suggested (anyOf the enum or any string) so that names registered later stay valid."""
    if not described:
        return {}
    names = sorted(described)
    known = {"enum": names, "markdownEnumDescriptions": [described[n] for n in names]}
    if strict:
        return known
    return {"examples": names, "anyOf": [known, {"type": "string", "description": "A name registered after this "
                                                 "schema was written (a plugin); simworld validate checks it."}]}


def _prop(description: str, **schema: Any) -> dict[str, Any]:
    return {"description": description, **schema}


def _world_names(world: str, world_cls: Any, agents: dict[str, str], strict: bool,
                 task_params: list[dict[str, Any]]) -> dict[str, Any]:
    """``if world.type is WORLD then`` its tasks (with their parameters), its tools and the agents that
    play it (by role kind)."""
    def plays(name: str, kind: str | None = None) -> bool:
        cls = registry.AGENTS[name]
        worlds, kinds = agent_worlds(cls), agent_kinds(cls)
        return (worlds is None or world in worlds) and (kind is None or kinds is None or kind in kinds)

    in_world = {n: d for n, d in agents.items() if plays(n)}
    role: dict[str, Any] = {"properties": {
        "tools": _prop(f"Tools of world {world!r}.", items=_name_choice(
            {n: summary(t.spec.description) for n, t in world_cls.tools.items()}, strict)),
        "agent": _prop(f"An agent that plays world {world!r}.", properties={
            "type": _prop(f"Agents that play world {world!r}.", **_name_choice(in_world, strict))})}}
    by_kind = []
    for kind in ("user", "assistant"):
        fits = {n: d for n, d in in_world.items() if plays(n, kind)}
        if fits and fits != in_world:
            by_kind.append({
                "if": {"properties": {"kind": _prop(f"A role of kind {kind!r}.", const=kind)}, "required": ["kind"]},
                "then": {"properties": {"agent": _prop(f"An agent that plays a {kind!r} role of world {world!r}.",
                                                       properties={"type": _prop(
                                                           f"Agents that play a {kind!r} role of world {world!r}.",
                                                           **_name_choice(fits, strict))})}}})
    if by_kind:
        role["allOf"] = by_kind
    task = _prop(f"A task generator of world {world!r}.", properties={"type": _prop(
        f"Task generators of world {world!r}.", **_name_choice(
            {n: doc_summary(c) for n, c in registry.TASKS.get(world, {}).items()}, strict))})
    _add_rules(task, task_params)
    return {
        "if": {"properties": {"world": _prop(f"World {world!r}.", properties={
            "type": _prop(f"World {world!r}.", const=world)}, required=["type"])}, "required": ["world"]},
        "then": {"properties": {"task": task,
                                "roles": _prop(f"Roles in world {world!r}.", additionalProperties=role)}}}


# ----------------------------------------------------------------------------------------------
# YAML with line numbers


_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# Aliases may repeat a node; past this many nodes beyond those written in the file, a document is
# refused (an alias bomb: a few hundred bytes that expand to billions of nodes when validated).
MAX_ALIAS_EXPANSION = 100_000


class _LineLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false are booleans, yes/no/on/off are words.

    A scenario author writing ``values: [no, yes]`` means the words (bool fields still accept
    them: pydantic reads "yes"/"no"/"on"/"off" as booleans).
    """


_LineLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_LineLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


class _YamlProblem(Exception):
    """A well-formed YAML document that is refused (alias bomb, duplicate key, a scalar such as
    ``2025-02-29`` that its type cannot hold)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0])
        self.problems = problems


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(nodes once aliases are expanded, distinct nodes), each node visited once.

    Raises _YamlProblem for an alias that contains itself.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in active:
            raise _YamlProblem([f"(line {node.start_mark.line + 1}): recursive YAML alias (a node that contains itself)"])
        active.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                total += size(key_node) + size(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
        active.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root), len(sizes)


def _scalar_key(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    """The key as loaded (`1` and `0x1` are one key), or its text when it cannot be constructed."""
    try:
        return loader.construct_object(node)
    except (yaml.YAMLError, *_SCALAR_FAILURES):
        return node.value


# What PyYAML's scalar constructors raise, besides YAMLError, for text that matches a type's pattern
# (or carries its explicit tag) and yet is no such value: `2025-02-29`, `!!int abc`, `!!bool maybe`.
_SCALAR_FAILURES = (ValueError, KeyError, TypeError, AttributeError, OverflowError)
_SCALAR_KINDS = {"tag:yaml.org,2002:timestamp": "date", "tag:yaml.org,2002:int": "integer",
                 "tag:yaml.org,2002:float": "number", "tag:yaml.org,2002:bool": "boolean"}


def _unconstructable(loader: yaml.SafeLoader, node: yaml.Node) -> str | None:
    """Why a scalar node cannot be loaded as the type its text or tag gives it, or None."""
    if not isinstance(node, yaml.ScalarNode) or node.tag not in _SCALAR_KINDS:
        return None
    try:
        loader.construct_object(node)
    except _SCALAR_FAILURES as exc:
        reason = f" ({one_line(exc)})" if type(exc) is ValueError else ""
        return (f"{node.value!r} is not a valid {_SCALAR_KINDS[node.tag]}{reason}; quote it if it is meant as text")
    return None


def _compose_lines(loader: yaml.SafeLoader, node: yaml.Node, path: tuple[Any, ...],
                   lines: dict[tuple[Any, ...], int], refused: list[str], checked: set[int]) -> None:
    """Record the line of every path under `node`; add to `refused` each duplicate key and each
    scalar that cannot be constructed (both are refused before the document is constructed)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.ScalarNode) and id(node) not in checked:  # (an aliased one is reported once)
        checked.add(id(node))
        bad = _unconstructable(loader, node)
        if bad is not None:
            refused.append(f"{format_path(path)} (line {node.start_mark.line + 1}): {bad}")
    if isinstance(node, yaml.MappingNode):
        first_seen: dict[Any, int] = {}
        check = id(node) not in checked  # an aliased mapping's duplicates are reported once
        checked.add(id(node))
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            lines[path + (key,)] = line
            bad = _unconstructable(loader, key_node) if check else None
            if bad is not None:
                refused.append(f"{format_path(path + (key,))} (line {line}): the key {bad}")
            if check and isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                ident = _scalar_key(loader, key_node)
                try:
                    first = first_seen.get(ident)
                    first_seen.setdefault(ident, line)
                except TypeError:  # unhashable: cannot be a key in the loaded data either
                    first = None
                if first is not None:
                    refused.append(f"{format_path(path + (key,))} (line {line}): duplicate key {key!r} "
                                   f"(first at line {first})")
            _compose_lines(loader, value_node, path + (key,), lines, refused, checked)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _compose_lines(loader, item, path + (i,), lines, refused, checked)


def _load_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Data and line map of one YAML document; raises yaml.YAMLError, RecursionError, _YamlProblem."""
    loader = _LineLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple[Any, ...], int] = {}
        if node is None:
            return None, lines
        expanded, distinct = _expanded_size(node)
        if expanded - distinct > MAX_ALIAS_EXPANSION:
            raise _YamlProblem([f"(top level): YAML aliases expand the document by more than {MAX_ALIAS_EXPANSION:,} "
                                "nodes (an alias bomb?); write the repeated parts out instead"])
        refused: list[str] = []
        _compose_lines(loader, node, (), lines, refused, set())
        if refused:
            raise _YamlProblem(refused)
        return loader.construct_document(node), lines
    finally:
        loader.dispose()


def read_yaml(text: str, source: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse a scenario's YAML: (data, {path: line}); every problem raises ScenarioError.

    Refuses what `yaml.safe_load` would accept but a scenario must not hold: duplicate keys (any
    depth) and aliases that expand the document beyond MAX_ALIAS_EXPANSION nodes; and, with its path
    and line, what `yaml.safe_load` fails on with a bare exception: a scalar its type cannot hold
    (``2025-02-29``, ``!!int abc``).
    """
    try:
        return _load_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        where, problem = _yaml_problem(exc)
        raise ScenarioError([f"malformed YAML{where}: {problem}"], source) from None
    except _YamlProblem as exc:
        raise ScenarioError(exc.problems, source) from None


def _yaml_problem(exc: Exception, one_line: bool = False) -> tuple[str, str]:
    """(" (line N, column M)" or "", what is wrong) of a YAML parse error or a RecursionError; the
    column alone for `one_line` text."""
    if isinstance(exc, RecursionError):
        return "", "nested too deeply"
    mark = getattr(exc, "problem_mark", None)
    where = "" if mark is None else f" (column {mark.column + 1})" if one_line else \
        f" (line {mark.line + 1}, column {mark.column + 1})"
    return where, getattr(exc, "problem", None) or str(exc).splitlines()[0]


def format_path(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(top level)"


def _inside(dotted: str, outer: str) -> bool:
    """Is the dotted path `dotted` the path `outer` or within what it holds (`outer.x`, `outer[0]`)?"""
    return dotted == outer or dotted.startswith((outer + ".", outer + "["))


class _Problems:
    def __init__(self, lines: dict[tuple[Any, ...], int], overrides: dict[str, str] | None = None) -> None:
        self.lines = lines
        self.overrides = overrides or {}
        self.items: list[str] = []
        self._order: dict[str, int] = {}

    def in_file_order(self) -> list[str]:
        """Problems sorted by YAML line (--set problems first), else in the order found."""
        return sorted(self.items, key=lambda item: self._order.get(item, 0))

    def add(self, path: tuple[Any, ...], message: str) -> None:
        dotted = format_path(path)
        where = ""
        within: list[str] = []  # --set paths inside what the file holds at `path` (a problem of the whole)
        for name in self.overrides:
            # (a problem with a parent of an override path that the file does not hold came from --set too)
            if _inside(dotted, name) or (name.startswith(dotted + ".") and path not in self.lines):
                where = f" (from --set {name})"
                break
            if _inside(name, dotted):
                within.append(name)
        lineno = 0
        if not where:
            probe = path
            while probe and probe not in self.lines:
                probe = probe[:-1]
            if probe in self.lines:
                lineno = self.lines[probe]
                where = f" (line {lineno}" + "".join(f", with --set {name}" for name in within) + ")"
        line = f"{dotted}{where}: {message}"
        if line not in self.items:
            self.items.append(line)
            self._order[line] = lineno


class _SetOnly:
    """The problems of a recorded scenario's new rules that --set brought in: the rest of the file
    was run under the rules of its day and must still read."""

    def __init__(self, problems: _Problems) -> None:
        self.problems = problems

    def add(self, path: tuple[Any, ...], message: str) -> None:
        dotted = format_path(path)
        if any(_inside(dotted, name) for name in self.problems.overrides):
            self.problems.add(path, message)


def _pydantic_problems(exc: ValidationError, problems: _Problems, prefix: tuple[Any, ...] = (),
                       known: dict[tuple[Any, ...], list[str]] | None = None, skip: str = "\0") -> None:
    for err in exc.errors():
        loc = prefix + tuple(err.get("loc", ()))
        kind = err.get("type", "")
        if skip in err.get("msg", ""):
            continue
        if kind == "extra_forbidden":
            parent = loc[:-1]
            names = (known or {}).get(parent, [])
            problems.add(loc, f"unknown field {loc[-1]!r}{suggest(str(loc[-1]), names)}")
        elif kind == "missing":
            problems.add(loc, "required field missing")
        elif kind == "value_error":  # a validator's own message, without pydantic's "Value error, " before it
            problems.add(loc, str((err.get("ctx") or {}).get("error") or err.get("msg", "invalid value")))
        else:
            problems.add(loc, err.get("msg", "invalid value") + _number_as_text_hint(kind, err.get("input")))


_EXPONENT_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _number_as_text_hint(kind: str, value: Any) -> str:
    """YAML 1.1 (PyYAML) reads `1e12` as text, not a number: say so, and how to write it as one."""
    if kind != "int_parsing" or not isinstance(value, str) or not _EXPONENT_NUMBER.fullmatch(value.strip()):
        return ""
    x = float(value)
    number = str(int(x)) if x.is_integer() and abs(x) < 1e18 else repr(x)
    if "e" in number and "." not in number.split("e")[0]:
        number = number.replace("e", ".0e")  # 1e-09 is text to YAML 1.1 too; 1.0e-09 is a number
    return f" (YAML reads {value} as text; write the number as {number})"


def _model_fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


_SECTION_FIELDS = {
    (): _model_fields(Scenario),
    ("world",): _model_fields(WorldSpec),
    ("task",): _model_fields(TaskSpec),
}


def _known_fields(data: dict[str, Any]) -> dict[tuple[Any, ...], list[str]]:
    known = dict(_SECTION_FIELDS)
    for role in (data.get("roles") or {}) if isinstance(data.get("roles"), dict) else {}:
        known[("roles", role)] = _model_fields(RoleSpec)
    return known


# ----------------------------------------------------------------------------------------------
# Dotted paths (variations and --set)


def _split_path(dotted: str) -> list[str]:
    parts = [p for p in dotted.split(".")]
    if not dotted or any(not p for p in parts):
        raise SimworldError(f"bad dotted path {dotted!r}")
    return parts


class PathNotFound(KeyError):
    """A dotted path that leads nowhere in the data; `reason` says why where a list index is the cause."""

    def __init__(self, dotted: str, reason: str = "") -> None:
        super().__init__(dotted)
        self.reason = reason


def _index_problem(node: list[Any], part: str, parent: list[str]) -> str:
    """Why `part` does not index the list `node` (found at the path `parent`); "" when it does."""
    n = len(node)
    where = ".".join(parent) or "(top level)"
    size = f"{where} has {counted(n, 'item')}" + (f" (0 to {n - 1})" if n else "")
    if not part.isdigit():
        return f"{where} is a list: {part!r} is not an index; {size}"
    if int(part) < n:
        return ""
    return f"index {int(part)} is out of range: {size}; to add an item, set the whole list ({where}=[...])"


def get_path(data: Any, dotted: str) -> Any:
    """The value at `dotted` (list items by index). Raises PathNotFound (a KeyError)."""
    node = data
    parts = _split_path(dotted)
    for depth, part in enumerate(parts):
        if isinstance(node, list):
            problem = _index_problem(node, part, parts[:depth])
            if problem:
                raise PathNotFound(dotted, problem)
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise PathNotFound(dotted)
    return node


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set the value at `dotted`, making the mappings on the way; a list item only by an index it
    has. Raises SimworldError saying why it cannot (a bad index, with the list's length)."""
    parts = _split_path(dotted)
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            problem = _index_problem(node, part, parts[:depth])
            if problem:
                raise SimworldError(problem)
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):  # (a list item that holds a scalar)
            raise SimworldError(f"{'.'.join(parts[:depth])} is {node!r}, not a mapping: it has no {part!r}")
        if last:
            node[part] = value
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]


def _shown_argument(item: str, limit: int = 80) -> str:
    return repr(item if len(item) <= limit else item[:limit - 3] + "...")


# A value that opens with one of these is YAML structure (a list, a mapping, a quoted string): when it
# is malformed, the user mistyped it. Other values YAML cannot read are plain text, set as written.
_YAML_OPENERS = ("[", "{", '"', "'")


_LINE_NOTE = re.compile(r" \(line \d+\)(?=: )")


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``--set PATH=VALUE`` arguments as ``{PATH: value}``; each VALUE is YAML (``[a, b]``,
    ``{k: v}``, ``5``, ``true``), or the text as written where it is plain text that YAML cannot
    read. A malformed path, or a malformed YAML list, mapping or quoted string, raises
    SimworldError naming the argument."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SimworldError(f"--set {_shown_argument(item)}: expected dotted.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise SimworldError(f"--set {_shown_argument(item)}: no path before '='; expected dotted.path=value "
                                "(e.g. max_turns=20)")
        if any(not part for part in key.split(".")):
            raise SimworldError(f"--set {_shown_argument(item)}: the path {key!r} has an empty part; expected "
                                "dotted.path=value (e.g. roles.support.agent.type=llm)")
        try:
            value = _load_yaml(raw)[0] if raw.strip() else ""
        except (yaml.YAMLError, RecursionError) as exc:
            if not raw.lstrip().startswith(_YAML_OPENERS):
                value = raw
            else:
                where, problem = _yaml_problem(exc, one_line="\n" not in raw)
                raise SimworldError(f"--set {_shown_argument(item)}: the value is malformed YAML{where}: "
                                    f"{problem}") from None
        except _YamlProblem as exc:
            problem = exc.problems[0]
            if "\n" not in raw.strip():  # (the line of a one-line value says nothing; a path inside it does)
                problem = _LINE_NOTE.sub("", problem, count=1)
            raise SimworldError(f"--set {key}: {problem.removeprefix('(top level): ')}") from None
        out[key] = value
    return out


# ----------------------------------------------------------------------------------------------
# Semantic validation against the registries


def _check_semantics(sc: Scenario, problems: _Problems) -> None:
    _check_semantics_data(sc.model_dump(), problems)


def _params_problems(model: type[BaseModel], value: Any, path: tuple[Any, ...], problems: _Problems) -> Any:
    """The validated parameters, or None after adding their problems."""
    try:
        return model.model_validate(value if value is not None else {})
    except ValidationError as exc:
        _pydantic_problems(exc, problems, path, {path: list(model.model_fields)})
        return None


# An unknown name that is close to no registered one is most often a plugin's that is not loaded here
# (a run dir handed over from a machine with the plugin, a scenario written for one).
def _unknown_hint(name: str, known: Any, listing: str) -> str:
    return suggest(name, known) or (" (not registered here: is it a plugin's? load the plugin with "
                                    "SIMWORLD_PLUGINS=MODULE or a simworld.plugins entry point; "
                                    f"simworld list {listing} shows the registered ones)")


def _special_token_problems(data: dict[str, Any], problems: _Problems | _SetOnly) -> None:
    """A Llama 3 special token in scenario text that reaches the conversation: a role's system prompt
    or persona (in every sample of the role), and any text of the world's or task's parameters
    (briefs, issue wording, tool answers). Export drops every sample that holds one."""
    from simworld.llama3.parse import special_token_in  # (the Llama 3 code loads only when a scenario is checked)

    def check(path: tuple[Any, ...], text: str) -> None:
        token = special_token_in(text)
        if token is not None:
            problems.add(path, f"holds the Llama 3 special token <|{token}|>, which is structure, not text: export "
                         "drops every sample it reaches (special_tokens_in_text); write it some other way")

    def walk(path: tuple[Any, ...], node: Any) -> None:
        if isinstance(node, str):
            check(path, node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str):
                    check(path + (key,), key)
                walk(path + (key,), value)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(path + (i,), item)

    roles = data.get("roles")
    for role, spec in roles.items() if isinstance(roles, dict) else ():
        for field in ("system_prompt", "persona"):
            if isinstance(spec, dict) and isinstance(spec.get(field), str):
                check(("roles", role, field), spec[field])
    for section in ("world", "task"):
        if isinstance(data.get(section), dict):
            walk((section, "params"), data[section].get("params"))


def agent_worlds(agent_cls: type) -> tuple[str, ...] | None:
    """The worlds an agent plays, or None for any world.

    An agent class declares them with a ``worlds`` class attribute (a tuple of registered world
    names), as the scripted retail agents and negotiation strategies do; one without (the LLM
    agent, a plugin's) plays any world.
    """
    declared = getattr(agent_cls, "worlds", None)
    return tuple(declared) if declared is not None else None


def agent_kinds(agent_cls: type) -> tuple[str, ...] | None:
    """The role kinds an agent can play (its ``kinds`` class attribute), or None for either kind."""
    declared = getattr(agent_cls, "kinds", None)
    return tuple(declared) if declared is not None else None


def _agent_fit_problems(agent_cls: type, role: str, kind: Any, world_type: str | None, problems: _Problems) -> None:
    """An agent that cannot play its role's world or kind: every episode would fail or be nonsense."""
    name = getattr(agent_cls, "type_name", "") or agent_cls.__name__
    worlds = agent_worlds(agent_cls)
    if world_type is not None and worlds is not None and world_type not in worlds:
        problems.add(("roles", role, "agent", "type"), f"agent {name!r} plays the {' / '.join(worlds)} world, "
                     f"not {world_type!r}; choose an agent of world {world_type!r} (simworld list agents)")
    kinds = agent_kinds(agent_cls)
    if isinstance(kind, str) and kinds is not None and kind not in kinds:
        problems.add(("roles", role, "kind"), f"agent {name!r} plays a role of kind {' or '.join(map(repr, kinds))}, "
                     f"not {kind!r} (are two roles' kinds or agents swapped?)")


def _check_semantics_data(data: dict[str, Any], problems: _Problems, recorded: bool = False) -> None:
    """Check names against the registries on raw scenario data, and what only the whole scenario can
    show: a tool or scorer listed twice, a world's parameters against the roles (its Params model's
    ``scenario_problems``), a Llama 3 special token in text that reaches the conversation.

    Works on data that failed the structural schema too (every part that has the right shape is
    checked), so that a file's problems are all reported at once. `recorded`: the data is a run
    directory's own scenario, which those whole-scenario rules (what a new run would waste) do not
    lock out: they then apply only to what --set changes in it (a fork's new persona, scoring).
    """
    from simworld.world import World

    whole = _SetOnly(problems) if recorded else problems

    registry.load_builtins()
    world = data.get("world") if isinstance(data.get("world"), dict) else {}
    task = data.get("task") if isinstance(data.get("task"), dict) else {}
    roles = data.get("roles") if isinstance(data.get("roles"), dict) else {}
    world_type, task_type = world.get("type"), task.get("type")
    world_cls: type[World] | None = None
    if isinstance(world_type, str):
        world_cls = registry.WORLDS.get(world_type)
        if world_cls is None:
            problems.add(("world", "type"), f"unknown world {world_type!r}"
                         f"{_unknown_hint(world_type, registry.WORLDS, 'worlds')}")
        elif isinstance(world.get("params", {}), dict):
            params = _params_problems(world_cls.Params, world.get("params"), ("world", "params"), problems)
            # A world's parameters checked against the rest of the scenario (e.g. that they name its
            # roles): the Params model's optional scenario_problems(data) -> [(path, message)].
            scenario_problems = getattr(params, "scenario_problems", None)
            for path, message in scenario_problems(data) if callable(scenario_problems) else ():
                whole.add(tuple(path), message)
    if world_cls is not None and isinstance(task_type, str):
        tasks = registry.TASKS.get(world_type, {})
        task_cls = tasks.get(task_type)
        if task_cls is None:
            problems.add(("task", "type"), f"unknown task {task_type!r} for world {world_type!r}"
                         f"{_unknown_hint(task_type, tasks, 'tasks')}")
        elif isinstance(task.get("params", {}), dict):
            _params_problems(task_cls.Params, task.get("params"), ("task", "params"), problems)
    for role, spec in roles.items():
        if not isinstance(spec, dict):
            continue
        tools = spec.get("tools")
        first_at: dict[str, int] = {}
        for i, tool in enumerate(tools if isinstance(tools, list) else ()):
            if not isinstance(tool, str):
                continue
            if world_cls is not None and tool not in world_cls.tools:
                problems.add(("roles", role, "tools", i), f"unknown tool {tool!r}{suggest(tool, world_cls.tools)}")
            elif tool in first_at:  # (a model would be offered two definitions of one function)
                whole.add(("roles", role, "tools", i), f"tool {tool!r} is listed twice (first at index "
                             f"{first_at[tool]}); list each tool once")
            first_at.setdefault(tool, i)
        agent = spec.get("agent")
        if not isinstance(agent, dict) or not isinstance(agent.get("type"), str):
            continue
        agent_cls = registry.AGENTS.get(agent["type"])
        if agent_cls is None:
            problems.add(("roles", role, "agent", "type"),
                         f"unknown agent {agent['type']!r}{_unknown_hint(agent['type'], registry.AGENTS, 'agents')}")
        else:
            _params_problems(agent_cls.Params, agent, ("roles", role, "agent"), problems)
            _agent_fit_problems(agent_cls, role, spec.get("kind"), world_type if world_cls else None, problems)
    kinds = [spec.get("kind") for spec in roles.values() if isinstance(spec, dict)]
    if roles and "assistant" not in kinds and all(k in ("user", "assistant") for k in kinds):
        problems.add(("roles",), f"no role of kind 'assistant' (roles {', '.join(map(repr, roles))} are all 'user'): "
                     "an episode's training data is the assistant side, so there would be nothing to export")
    first = data.get("first_speaker")
    if isinstance(first, str) and isinstance(data.get("roles"), dict) and first not in roles:
        problems.add(("first_speaker",), f"unknown role {first!r}{suggest(first, roles)}")
    scoring = data.get("scoring")
    scored_at: dict[str, int] = {}
    for i, name in enumerate(scoring if isinstance(scoring, list) else []):
        if isinstance(name, str) and name in scored_at:
            whole.add(("scoring", i), f"scorer {name!r} is listed twice (first at index {scored_at[name]}); "
                         "list each scorer once")
        elif isinstance(name, str):
            scored_at[name] = i
        if isinstance(name, str) and name not in registry.SCORERS:
            problems.add(("scoring", i), f"unknown scorer {name!r}{_unknown_hint(name, registry.SCORERS, 'scorers')}")
        elif isinstance(name, str):  # a scorer that cannot be called is seen by its signature, before any run
            from simworld.scoring.base import scorer_problem

            if (problem := scorer_problem(registry.SCORERS[name])) is not None:
                problems.add(("scoring", i), f"scorer {name!r} {problem}")
    _special_token_problems(data, whole)


def _name_problem(data: dict[str, Any], problems: _Problems) -> None:
    name = data.get("name")
    if isinstance(name, str) and not SCENARIO_NAME.fullmatch(name):
        problems.add(("name",), "name must be letters, digits, '_', '.' and '-' only, and not empty: it starts "
                     f"every episode id (NAME-sSEED-INDEX) and sample id (RUN/EPISODE/ROLE); got {name!r}")


def _validate(data: Any, lines: dict[tuple[Any, ...], int], source: str,
              overrides: dict[str, Any] | None = None, recorded: bool = False) -> Scenario:
    problems = _Problems(lines, {k: "" for k in (overrides or {})})
    if not isinstance(data, dict):
        raise ScenarioError(["(top level): a scenario must be a YAML mapping"], source)
    # Validate what a run uses and writes to its scenario.yaml: the scenario as JSON data (mapping
    # keys are strings, dates ISO text). Otherwise a key such as `true:` would pass here as a bool
    # and reach the run as the string 'true'.
    try:
        data = to_jsonable_python(data)
    except (PydanticSerializationError, ValueError) as exc:
        raise ScenarioError([f"(top level): not representable as JSON: {one_line(exc)}"], source) from None
    sc: Scenario | None = None
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        _pydantic_problems(exc, problems, (), _known_fields(data), skip=_EMPTY_VARIATION)
    # Semantic checks run on whatever has the right shape, so every problem is listed at once.
    _check_semantics_data(data, problems, recorded)
    if not recorded:  # a run recorded before names were restricted still reads under its own name
        _name_problem(data, problems)
    variations = data.get("variations")
    if isinstance(variations, dict):
        _variation_problems(data, variations, problems, recorded)
    if problems.items or sc is None:
        raise ScenarioError(problems.in_file_order() or ["(top level): invalid scenario"], source)
    return sc


# Top-level fields that belong to the run, not to an episode: a variation of them would be recorded
# in every episode's record and yet change nothing (or something else than it says).
RUN_LEVEL_FIELDS = {
    "name": "names the run and its episode ids, which are fixed before variations are drawn",
    "description": "describes the scenario file, not an episode",
    "episodes": "is the number of episodes of the run",
    "repeats": "groups the run's episodes into task groups before variations are drawn",
    "seed": "seeds the run (episode ids and seeds); to vary the world, vary world.seed",
    "variations": "holds the variations themselves",
    "scoring": "names the scorers that simworld score and export run over the whole run",
    "today": "dates every exported prompt of the run (export reads the run's scenario, not the episode's)",
}


def _variation_problems(data: dict[str, Any], variations: dict[Any, Any], problems: _Problems,
                        recorded: bool = False) -> None:
    """Every problem of every variation at once: a missing path, no values, and each value that
    makes the scenario invalid where the scenario without variations is not (its own problems are
    reported once, not once per value)."""
    base = copy.deepcopy(data)
    base["variations"] = {}
    base_errors = _scenario_errors(base, recorded)
    for path, values in variations.items():
        if not isinstance(path, str):
            continue
        vpath = ("variations", path)
        run_level = RUN_LEVEL_FIELDS.get(path.split(".")[0])
        if run_level:
            problems.add(vpath, f"{path.split('.')[0]!r} cannot vary: it {run_level}; only world, task, roles, "
                         "first_speaker and max_turns vary per episode")
            continue
        if not _path_exists(data, path):
            problems.add(vpath, f"path {path!r} does not exist in the scenario"
                         f"{_missing_reason(data, path) or _path_suggestion(data, path)}")
            continue
        if isinstance(values, list) and not values:
            problems.add(vpath, "variation has no values")
        for i, value in enumerate(values if isinstance(values, list) else []):
            trial = copy.deepcopy(base)
            try:
                set_path(trial, path, value)
            except SimworldError as exc:
                problems.add(vpath + (i,), f"value {value!r} is invalid: {exc}")
                continue
            for error in _scenario_errors(trial, recorded):
                if error not in base_errors:
                    problems.add(vpath + (i,), f"value {value!r} is invalid: {error}")


def _scenario_errors(data: dict[str, Any], recorded: bool = False) -> list[str]:
    """The problems of scenario data without line numbers: structure (message only), then names."""
    errors: list[str] = []
    try:
        Scenario.model_validate(data)
    except ValidationError as exc:
        errors += [err.get("msg", "invalid value") for err in exc.errors()]
    names = _Problems({})
    _check_semantics_data(data, names, recorded)
    return errors + names.items


def _path_suggestion(data: dict[str, Any], dotted: str) -> str:
    """"; did you mean 'X'?" when one misspelt part of `dotted` stands between it and a real path."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict):
            return ""
        if part not in node:
            known = list(node) + (list(Scenario.model_fields) if i == 0 else [])
            fixed = suggest(part, known)
            if not fixed:
                return ""
            candidate = ".".join(parts[:i] + [fixed.split("'")[1]] + parts[i + 1:])
            return f"; did you mean {candidate!r}?" if _path_exists(data, candidate) else ""
        node = node[part]
    return ""


def _missing_reason(data: dict[str, Any], dotted: str) -> str:
    """": index 9 is out of range: ..." when a list index is why `dotted` leads nowhere, else ""."""
    try:
        get_path(data, dotted)
    except PathNotFound as exc:
        return f": {exc.reason}" if exc.reason else ""
    except SimworldError:
        pass
    return ""


def _path_exists(data: dict[str, Any], dotted: str) -> bool:
    try:
        get_path(data, dotted)
        return True
    except (KeyError, SimworldError):
        return _settable(data, dotted)


def _settable(data: dict[str, Any], dotted: str) -> bool:
    """Variations may set agent or params keys that the YAML leaves at their defaults."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return parts[0] in Scenario.model_fields
    roles = data.get("roles") if isinstance(data.get("roles"), dict) else {}
    if len(parts) == 2 and parts[0] in ("world", "task"):
        return parts[1] in (WorldSpec if parts[0] == "world" else TaskSpec).model_fields
    if len(parts) == 3 and parts[0] == "roles" and parts[2] in RoleSpec.model_fields:
        return parts[1] in roles
    if len(parts) >= 3 and parts[0] == "roles" and parts[2] == "agent":
        return parts[1] in roles
    return len(parts) >= 2 and parts[0] in ("world", "task") and parts[1] == "params"


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None, *, recorded: bool = False) -> Scenario:
    """Read, override and validate a scenario file. Raises ScenarioError / SimworldError.
    `recorded`: the file is a run directory's own, which keeps the name it was run under."""
    p = Path(path)
    source = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SimworldError(f"{source}: no such scenario file") from None
    except IsADirectoryError:
        raise SimworldError(f"{source}: is a directory, not a scenario file") from None
    except UnicodeDecodeError as exc:
        before = exc.object[:exc.start]
        line, column = before.count(b"\n") + 1, exc.start - (before.rfind(b"\n") + 1) + 1
        raise SimworldError(f"{source} (line {line}, column {column}): not UTF-8 text (byte "
                            f"0x{exc.object[exc.start]:02x}); save the file as UTF-8") from None
    except OSError as exc:
        raise SimworldError(f"{source}: cannot read: {exc}") from None
    data, lines = read_yaml(text, source)
    return scenario_from_data(data, lines, source, overrides, recorded=recorded)


def scenario_from_data(data: Any, lines: dict[tuple[Any, ...], int] | None = None, source: str = "<scenario>",
                       overrides: dict[str, Any] | None = None, *, recorded: bool = False) -> Scenario:
    data = copy.deepcopy(data)
    if overrides:
        if not isinstance(data, dict):
            raise ScenarioError(["(top level): a scenario must be a YAML mapping"], source)
        roles = data.get("roles") if isinstance(data.get("roles"), dict) else {}
        for key in overrides:
            # A whole new role comes as `--set roles.NAME={...}`; a longer path names an existing one.
            parts = key.split(".")
            if len(parts) >= 3 and parts[0] == "roles" and roles and parts[1] not in roles:
                hint = suggest(parts[1], roles) or f" (a new role is added with --set roles.{parts[1]}={{kind: ..., " \
                    "agent: {type: ...}})"
                raise ScenarioError([f"roles.{parts[1]} (from --set {key}): unknown role {parts[1]!r}{hint}"], source)
        for key, value in overrides.items():
            if key.startswith(_VARIATION_KEY):
                _set_variation(data, key, value, source)
                continue
            # `--set X.agent.type=T` with another type replaces the agent: the file's parameters
            # belonged to the old type; the new one's come from further --set options.
            parts = key.split(".")
            if len(parts) >= 2 and parts[-1] == "type" and parts[-2] == "agent":
                try:
                    old = get_path(data, key)
                except (KeyError, SimworldError):
                    old = None
                if old is not None and old != value:
                    set_path(data, ".".join(parts[:-1]), {})
            try:
                set_path(data, key, value)
            except SimworldError as exc:
                raise ScenarioError([f"--set {key}: {exc}"], source) from None
        variations = data.get("variations")
        if isinstance(variations, dict) and "variations" not in overrides:
            data["variations"] = {path: values for path, values in variations.items()
                                  if _VARIATION_KEY + path in overrides
                                  or not any(overridden_by(path, key) for key in overrides)}
    return _validate(data, lines or {}, source, overrides, recorded)


# `--set variations.PATH=[values]` sets the variation of PATH (a variation's key is a dotted path
# itself, so the rest of the option's path is one key, not a path into a mapping).
_VARIATION_KEY = "variations."


def _set_variation(data: dict[str, Any], key: str, values: Any, source: str) -> None:
    path = key[len(_VARIATION_KEY):]
    if not isinstance(values, list):
        raise ScenarioError([f"{key} (from --set {key}): a variation is a list of values, e.g. "
                             f"--set '{key}=[A, B]'"], source)
    if data.get("variations") is None:
        data["variations"] = {}
    if isinstance(data["variations"], dict):  # (otherwise validation reports what the file holds)
        data["variations"][path] = values


def overridden_by(variation_path: str, override_path: str) -> bool:
    """Does `--set override_path=...` take precedence over the variation at `variation_path`?

    An explicit `--set` wins over a variation of the same value, of a value inside it, or of a value
    containing it; and setting `X.type` (another agent, world or task) drops the variations of
    `X`'s other parameters, which belonged to the replaced type.
    """
    v, o = variation_path, override_path
    if v == o or v.startswith(o + ".") or o.startswith(v + "."):
        return True
    if o.endswith(".type"):
        return v.startswith(o[: -len("type")])
    return False


def apply_variation(sc: Scenario, variation: dict[str, Any]) -> Scenario:
    """The scenario with one drawn value per variation path applied."""
    if not variation:
        return sc

    def build() -> Scenario:
        data = sc.model_dump(mode="json")
        for path, value in variation.items():
            set_path(data, path, value)
        data["variations"] = {}
        return Scenario.model_validate(data)

    return _memo(sc, ("variation", orjson.dumps(variation, option=orjson.OPT_SORT_KEYS)), build)
