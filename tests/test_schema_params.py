"""`simworld schema` describes each world's, task's and agent's parameters (their pydantic Params
models), so an editor completes and checks `world.params`, `task.params` and `roles.*.agent`; the
schema and `simworld validate` agree on what is wrong and where."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from simworld import registry
from simworld.agent import AgentParams
from simworld.errors import ScenarioError
from simworld.scenario import json_schema, read_yaml, scenario_from_data, set_path

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").rglob("*.yaml"))
MODES = pytest.mark.parametrize("strict", [False, True], ids=["suggest", "strict"])


def scenario(name: str) -> dict:
    path = next(p for p in SCENARIOS if p.name == name)
    return to_jsonable_python(read_yaml(path.read_text(encoding="utf-8"), str(path))[0])


def retail() -> dict:
    return scenario("cancel_pending_order.yaml")


def schema_paths(data: dict, strict: bool = False, schema: dict | None = None) -> dict[str, str]:
    """{dotted path: message} of what the schema refuses; an unexpected or missing key is named by its
    own path, as validate names it."""
    schema = schema if schema is not None else json_schema(strict)
    found = {}
    for error in jsonschema.Draft202012Validator(schema).iter_errors(data):
        for leaf in (error.context or [error]) if error.validator == "anyOf" else [error]:
            where = ".".join(map(str, leaf.absolute_path))
            if leaf.validator in ("additionalProperties", "required"):
                keys = set(leaf.instance) - set(leaf.schema.get("properties", {})) \
                    if leaf.validator == "additionalProperties" else set(leaf.validator_value) - set(leaf.instance)
                for key in sorted(keys):
                    found[f"{where}.{key}" if where else key] = leaf.message
            else:
                found[where] = leaf.message
    return found


def validate_paths(data: dict) -> dict[str, str]:
    """{dotted path: message} of what `simworld validate` reports (the same check, in process)."""
    try:
        scenario_from_data(data)
    except ScenarioError as exc:
        return dict(p.split(": ", 1) for p in exc.problems)
    return {}


def agree(data: dict, strict: bool = False) -> set[str]:
    """The paths both refuse; fails when the schema and validate disagree about where."""
    by_schema, by_validate = schema_paths(data, strict), validate_paths(data)
    assert set(by_schema) == set(by_validate), (by_schema, by_validate)
    return set(by_schema)


@MODES
def test_a_misspelt_world_param_is_refused_where_validate_reports_it(strict):
    data = retail()
    data["world"]["params"] = {"n_order": 5}
    assert agree(data, strict) == {"world.params.n_order"}
    assert "did you mean 'n_orders'" in validate_paths(data)["world.params.n_order"]
    data["world"]["params"] = {"n_orders": 0}  # below its minimum
    assert agree(data, strict) == {"world.params.n_orders"}
    data["world"]["params"] = {"n_orders": 5, "status_mix": [0.25, 0.25, 0.5, 0.0]}
    assert agree(data, strict) == set()


@MODES
def test_a_wrong_type_of_agent_param_is_refused_where_validate_reports_it(strict):
    data = retail()
    data["roles"]["support"]["agent"] = {"type": "noisy_oracle", "error_rate": "high"}
    assert agree(data, strict) == {"roles.support.agent.error_rate"}
    assert "number" in schema_paths(data, strict)["roles.support.agent.error_rate"]
    data["roles"]["support"]["agent"] = {"type": "noisy_oracle", "error_rate": 0.1}
    assert agree(data, strict) == set()
    data["roles"]["support"]["agent"] = {"type": "oracle", "error_rate": 0.1}  # the oracle has no knobs
    assert agree(data, strict) == {"roles.support.agent.error_rate"}
    data["roles"]["customer"]["agent"] = {"type": "customer", "style": "rude"}  # not one of its styles
    assert agree(data, strict) == {"roles.support.agent.error_rate", "roles.customer.agent.style"}


@MODES
def test_task_params_follow_the_task_and_its_world(strict):
    data = retail()
    data["task"]["params"] = {"n_requests": 3}  # a parameter of multi_order only
    assert agree(data, strict) == {"task.params.n_requests"}
    data["task"]["type"] = "multi_order"
    assert agree(data, strict) == set()
    data["task"]["params"] = {"max_item": 3}
    assert agree(data, strict) == {"task.params.max_item"}

    bargaining = scenario("used_car.yaml")
    bargaining["task"]["params"] = {"reservation_jitter": 0.1}
    assert agree(bargaining, strict) == set()
    data["task"] = {"type": "multi_order", "params": {"reservation_jitter": 0.1}}  # the negotiate task's
    assert agree(data, strict) == {"task.params.reservation_jitter"}


def test_unknown_names_leave_their_params_open_unless_strict():
    """A plugin's world, task or agent registered after the schema was written: its parameters are
    unknown here, so nothing about them is an error (simworld validate checks them)."""
    data = retail()
    data["world"] = {"type": "my_plugin_world", "params": {"anything": 1}}
    data["task"] = {"type": "my_plugin_task", "params": {"size": "big"}}
    data["roles"]["support"]["agent"] = {"type": "my_plugin_agent", "error_rate": "high"}
    assert schema_paths(data, strict=False) == {}
    assert set(schema_paths(data, strict=True)) == {"world.type", "task.type", "roles.support.agent.type"}


def test_every_params_model_is_one_def_and_forbids_what_it_forbids():
    registry.load_builtins()
    schema = json_schema()
    defs = schema["$defs"]
    models = {c.Params for c in registry.WORLDS.values()} | {c.Params for c in registry.AGENTS.values()} | {
        c.Params for tasks in registry.TASKS.values() for c in tasks.values()}
    rules = {}  # def name -> the `if` on type of each rule that points to it

    def collect(node):
        if isinstance(node, dict):
            then = node.get("then", {})
            target = then.get("$ref") or then.get("properties", {}).get("params", {}).get("allOf", [{}])[0].get("$ref")
            if target:
                rules.setdefault(target.rsplit("/", 1)[1], []).append(node["if"]["properties"]["type"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert len(rules) == len(models)  # one def per model, shared by the names that share it
    by_title = {defs[name]["title"]: defs[name] for name in rules}
    for model in models:
        # (two models of one class name, from two modules, get titles prefixed by their modules)
        node, = [node for title, node in by_title.items() if title == model.__name__
                 or title == model.__module__.replace(".", "__") + "__" + model.__name__]
        assert (node.get("additionalProperties") is False) == (model.model_config.get("extra") == "forbid"), model
        assert set(node["properties"]) == set(model.model_fields)
    # linear and time_based share TimeBasedParams: one rule names both
    assert rules["TimeBasedParams"] == [{"description": "Agents 'linear', 'time_based'.",
                                         "enum": ["linear", "time_based"]}]
    assert len(rules["RetailTaskParams"]) == 1 and len(rules["RetailTaskParams"][0]["enum"]) >= 5
    # every $ref resolves and every def is used
    text = json.dumps(schema)
    for key in defs:
        assert f'"#/$defs/{key}"' in text, key
    jsonschema.Draft202012Validator.check_schema(schema)


def test_no_ref_siblings_no_made_up_titles_and_inherited_descriptions():
    schema = json_schema()

    def walk(node, where):
        if isinstance(node, dict):
            assert not ("$ref" in node and len(node) > 1), where  # draft-07 readers drop a $ref's siblings
            for name, prop in (node.get("properties") or {}).items():
                assert "title" not in prop, f"{where}.{name}"  # not "N Orders" over "Number of orders."
                walk(prop, f"{where}.{name}")
            for key, value in node.items():
                if key not in ("properties", "default", "examples", "enum", "const"):
                    walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    walk(schema, "")
    defs = schema["$defs"]
    titles = [d["title"] for d in defs.values()]
    assert len(titles) == len(set(titles))
    # boulware declares its opening and exponent again only to change the defaults
    boulware = defs["BoulwareParams"]["properties"]
    assert boulware["exponent"]["default"] == 4.0
    assert boulware["exponent"]["description"] == defs["TimeBasedParams"]["properties"]["exponent"]["description"]
    # a policy given as text alone (a before-validator of the world's Params turns it into {text: ...})
    bargaining = scenario("refund_dispute.yaml")
    assert isinstance(bargaining["world"]["params"]["policies"]["returns"], str)
    assert schema_paths(bargaining) == {}


class OracleParams(AgentParams):
    """A plugin's agent whose Params class has the name of a built-in one."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    patience: int = Field(default=3, ge=1, description="Turns it waits.")
    clock: Path | None = None
    hook: object = None  # no JSON Schema for it: accepted as anything


class IssueSpec(BaseModel):
    """A plugin world's model named like the bargaining world's."""

    size: int = 1
    # (an arbitrary class, no JSON Schema: open, not a failure of the whole schema)
    handler: type = int


class PluginWorldParams(BaseModel):
    issues: list[IssueSpec] = Field(default_factory=list)


class NotAModel:
    """Params that is not a pydantic model: its parameters stay open."""


def test_name_collisions_and_types_without_json_schema(monkeypatch):
    registry.load_builtins()

    class PluginAgent:
        Params = OracleParams

    class PluginWorld:
        Params = PluginWorldParams
        tools: dict = {}

    class OddAgent:
        Params = NotAModel

    monkeypatch.setitem(registry.AGENTS, "plugin_agent", PluginAgent)
    monkeypatch.setitem(registry.AGENTS, "odd_agent", OddAgent)
    monkeypatch.setitem(registry.WORLDS, "plugin_world", PluginWorld)
    schema = json_schema(strict=True)
    defs = schema["$defs"]
    titles = [d["title"] for d in defs.values()]
    assert len(titles) == len(set(titles)) and len(defs) == len(set(defs))
    oracle_defs = [k for k in defs if k.endswith("OracleParams") and "Noisy" not in k]
    issue_defs = [k for k in defs if k.endswith("IssueSpec")]
    assert len(oracle_defs) == 2 and len(issue_defs) == 2, list(defs)
    jsonschema.Draft202012Validator.check_schema(schema)

    data = retail()
    data["roles"]["support"]["agent"] = {"type": "plugin_agent", "patience": 0, "hook": {"any": "thing"}}
    assert set(schema_paths(data, schema=schema)) == {"roles.support.agent.patience"}
    data["roles"]["support"]["agent"] = {"type": "oracle", "patience": 2}  # the built-in oracle has none
    assert set(schema_paths(data, schema=schema)) == {"roles.support.agent.patience"}
    data["roles"]["support"]["agent"] = {"type": "odd_agent", "whatever": 1}
    assert "roles.support.agent.whatever" not in schema_paths(data, schema=schema)
    data = retail()
    data["world"] = {"type": "plugin_world", "params": {"issues": [{"size": 2, "handler": "x"}, {"size": "x"}]}}
    assert set(schema_paths(data, schema=schema)) >= {"world.params.issues.1.size"}
    assert "world.params.issues.0.handler" not in schema_paths(data, schema=schema)


def variation_cases():
    for path in SCENARIOS:
        data = to_jsonable_python(read_yaml(path.read_text(encoding="utf-8"), str(path))[0])
        for dotted, values in (data.get("variations") or {}).items():
            for i, value in enumerate(values):
                yield pytest.param(path, dotted, value, id=f"{path.stem}-{dotted}-{i}")


@pytest.mark.parametrize(("path", "dotted", "value"), list(variation_cases()))
def test_each_shipped_variation_value_in_place_is_accepted(path, dotted, value):
    """What a run validates per episode (a variation's value put in place) the schema accepts too."""
    data = to_jsonable_python(read_yaml(path.read_text(encoding="utf-8"), str(path))[0])
    set_path(data, dotted, copy.deepcopy(value))
    assert validate_paths(data) == {}
    assert schema_paths(data, strict=True) == {}


def test_overrides_put_in_place_are_judged_alike():
    """`--set` overrides are applied to the data before validation; the schema judges that data as
    validate does (the README's 'swap in a model' overrides, and the same without the model)."""
    data = retail()
    set_path(data, "roles.support.agent", {})
    set_path(data, "roles.support.agent.type", "llm")
    assert agree(data) == {"roles.support.agent.model"}  # required by the llm agent
    set_path(data, "roles.support.agent.model", "openai/some-model")
    assert agree(data, strict=True) == set()
    set_path(data, "roles.support.agent.temperature", "hot")
    assert agree(data) == {"roles.support.agent.temperature"}


def test_variations_stay_open():
    """Dotted paths name places whose type depends on other parts of the scenario (a role's agent
    type, the world and task types, each of which may vary too), so the schema leaves them to
    simworld validate, which tries each value in place."""
    data = retail()
    data["variations"] = {"world.params.n_orders": [100, 200], "roles.support.agent": [{"type": "noisy_oracle",
                                                                                       "error_rate": 0.3}]}
    assert agree(data) == set()
    data["variations"]["world.params.n_orders"] = [100, "many"]
    assert schema_paths(data) == {}
    assert list(validate_paths(data)) == ["variations.world.params.n_orders[1]"]


def test_simworld_validate_names_the_paths_the_schema_flags(tmp_path):
    data = retail()
    data["world"]["params"] = {"n_order": 5}
    data["roles"]["support"]["agent"] = {"type": "noisy_oracle", "error_rate": "high"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "simworld", "validate", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    reported = {line.split(": ", 2)[1].split(" (line")[0] for line in proc.stdout.splitlines()}
    assert reported == set(schema_paths(data)) == set(schema_paths(data, strict=True)) == {
        "world.params.n_order", "roles.support.agent.error_rate"}


def test_the_output_is_byte_identical_across_runs_and_hash_seeds(tmp_path):
    outputs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"schema-{seed}.json"
        proc = subprocess.run([sys.executable, "-m", "simworld", "schema", "--strict", "-o", str(out)],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
