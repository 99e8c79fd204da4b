"""`simworld schema` lists the registered names: offered for completion by default (any other name
accepted, for plugins registered later), an enum with --strict; validated with jsonschema against
every scenario of scenarios/."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from pydantic_core import to_jsonable_python

import runner_plugin
from simworld import registry
from simworld.scenario import json_schema, read_yaml

SCENARIOS = sorted((Path(__file__).resolve().parent.parent / "scenarios").rglob("*.yaml"))


def validator(strict: bool) -> jsonschema.protocols.Validator:
    schema = json_schema(strict)
    cls = jsonschema.validators.validator_for(schema)  # the draft the schema declares
    assert cls is jsonschema.Draft202012Validator
    cls.check_schema(schema)
    return cls(schema)


def scenario(path: Path) -> dict:
    data, _ = read_yaml(path.read_text(encoding="utf-8"), str(path))
    return to_jsonable_python(data)  # what validation sees: the YAML as JSON data (dates as ISO text)


def errors(strict: bool, data: dict) -> dict[str, str]:
    """Where the schema refuses `data`: {"world.type": message, ...}."""
    found = {}
    for error in validator(strict).iter_errors(data):
        for leaf in (error.context or [error]) if error.validator == "anyOf" else [error]:
            found[".".join(map(str, leaf.absolute_path))] = leaf.message
    return found


def retail() -> dict:
    return scenario(next(p for p in SCENARIOS if p.name == "cancel_pending_order.yaml"))


def test_there_are_scenarios_of_both_worlds():
    assert {p.parent.name for p in SCENARIOS} >= {"retail", "negotiation"} and len(SCENARIOS) >= 10


@pytest.mark.parametrize("strict", [False, True], ids=["suggest", "strict"])
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_scenario_validates(path, strict):
    assert errors(strict, scenario(path)) == {}


def test_registered_names_are_listed_per_field():
    registry.load_builtins()
    schema = json_schema()
    defs = schema["$defs"]

    def offered(node):
        return set(node["examples"]) | set(node["anyOf"][0]["enum"])

    assert offered(defs["WorldSpec"]["properties"]["type"]) >= {"retail", "bargaining"}
    assert offered(defs["WorldSpec"]["properties"]["type"]) == set(registry.WORLDS)
    assert offered(defs["TaskSpec"]["properties"]["type"]) == {t for ts in registry.TASKS.values() for t in ts}
    assert offered(defs["AgentSpec"]["properties"]["type"]) == set(registry.AGENTS)
    assert offered(schema["properties"]["scoring"]["items"]) == set(registry.SCORERS)
    # each name comes with its description (the first line of its docstring)
    world_type = defs["WorldSpec"]["properties"]["type"]["anyOf"][0]
    described = dict(zip(world_type["enum"], world_type["markdownEnumDescriptions"]))
    assert described["retail"].startswith("An online store")
    # per world: the tasks and tools of that world only
    (retail_rule,) = [r for r in schema["allOf"] if r["if"]["properties"]["world"]["properties"]["type"]["const"] == "retail"]
    then = retail_rule["then"]["properties"]
    assert set(then["task"]["properties"]["type"]["examples"]) == set(registry.TASKS["retail"])
    tools = then["roles"]["additionalProperties"]["properties"]["tools"]["items"]["examples"]
    assert "cancel_pending_order" in tools and "make_offer" not in tools


def test_by_default_an_unknown_name_is_suggested_not_rejected():
    """A plugin's names (registered after the schema was written) must not be errors in an editor."""
    data = retail()
    data["world"]["type"] = "retial"
    data["task"]["type"] = "my_plugin_task"
    data["roles"]["support"]["agent"] = {"type": "my_plugin_agent", "anything": 1}
    data["scoring"] = ["my_plugin_scorer"]
    assert errors(False, data) == {}
    # ...while the structure is still checked
    data["max_turn"] = 3
    assert list(errors(False, data)) == [""]


def test_strict_flags_unknown_and_misplaced_names():
    data = retail()
    assert errors(True, data) == {}
    data["world"]["type"] = "retial"
    assert list(errors(True, data)) == ["world.type"]
    assert "'retail'" in errors(True, data)["world.type"]  # the message lists the valid names

    data = retail()
    data["task"]["type"] = "negotiate"  # a task of the bargaining world
    data["roles"]["support"]["tools"].append("make_offer")  # a bargaining tool
    data["roles"]["support"]["agent"] = {"type": "boulware"}  # an agent of the bargaining world
    data["scoring"] = ["state_mtch"]
    found = errors(True, data)
    assert set(found) == {"task.type", f"roles.support.tools.{len(data['roles']['support']['tools']) - 1}",
                          "roles.support.agent.type", "scoring.0"}, found

    data = retail()
    data["roles"]["support"]["agent"] = {"type": "customer"}  # plays the user side only
    assert list(errors(True, data)) == ["roles.support.agent.type"]
    data["roles"]["support"]["agent"] = {"type": "llm", "model": "openai/m"}  # any world, any kind
    assert errors(True, data) == {}


def simworld_schema(*args: str, plugins: bool) -> dict:
    env = runner_plugin.subprocess_env()
    if not plugins:
        env.pop("SIMWORLD_PLUGINS")
    proc = subprocess.run([sys.executable, "-m", "simworld", "schema", *args], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_the_command_lists_the_plugins_loaded_when_it_runs():
    ledger = runner_plugin.scenario_data()
    with_plugin = simworld_schema("--strict", plugins=True)
    jsonschema.validate(ledger, with_plugin)
    agents = with_plugin["$defs"]["AgentSpec"]["properties"]["type"]["enum"]
    assert {"sleepy_user", "ledger_clerk", "llm", "oracle"} <= set(agents)
    assert "ledger" in with_plugin["$defs"]["WorldSpec"]["properties"]["type"]["enum"]

    without = simworld_schema("--strict", plugins=False)
    assert "ledger" not in without["$defs"]["WorldSpec"]["properties"]["type"]["enum"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(ledger, without)
    # the default schema suggests the same names and accepts the plugin's scenario either way
    default = simworld_schema(plugins=False)
    jsonschema.validate(ledger, default)
    assert "retail" in default["$defs"]["WorldSpec"]["properties"]["type"]["examples"]


def test_names_do_not_leak_between_calls():
    strict = json_schema(True)
    again = copy.deepcopy(strict)
    json_schema(False)
    assert json_schema(True) == again


def test_a_plugin_that_cannot_load_is_one_line_and_no_schema():
    env = runner_plugin.subprocess_env(SIMWORLD_PLUGINS="no_such_plugin_module")
    proc = subprocess.run([sys.executable, "-m", "simworld", "schema"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no_such_plugin_module" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("strict", [False, True])
def test_the_schema_keeps_its_own_title_and_dialect(strict):
    schema = json_schema(strict=strict)
    assert schema["title"] == "simworld scenario"  # not pydantic's class name
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_one_summariser_serves_the_list_and_the_schema():
    """`simworld list` shows a name's first docstring paragraph on one clipped line; the schema gives
    the whole paragraph. Neither cuts at a docstring's line wrap, shows the pointer to the module
    docstring, or borrows a base class's docstring (it describes another name)."""
    from simworld.commands.listing import DOC_WIDTH, section_lines
    from simworld.docs_text import clip, doc_summary, summary

    doc = """Sample one negotiation: jittered preferences,
        a temperament per party (see the module docstring).

        Details that no summary shows.
        """
    assert summary(doc) == "Sample one negotiation: jittered preferences, a temperament per party."
    assert summary(doc, 40) == "Sample one negotiation: jittered…"
    assert summary("A long-enough-word", 8) == "A…" and summary("Unbreakableword", 8) == "Unbreak…"
    assert len(summary(doc, 40)) <= 40 and clip("short", 40) == "short"

    class Base:
        """A base class of something else."""

    class Registered(Base):
        pass

    assert doc_summary(Registered) == "" and doc_summary(Base) == "A base class of something else."

    registry.load_builtins()
    task = registry.TASKS["bargaining"]["negotiate"]
    assert "\n" in task.__doc__.strip().split("\n\n")[0]  # its first paragraph wraps: the case to get right
    full = doc_summary(task)
    tasks = {line.split()[0]: (line.split(None, 1) + [""])[1] for line in section_lines("tasks")}
    listed = tasks["bargaining/negotiate"]
    assert listed.endswith("…") and len(listed) <= DOC_WIDTH and full.startswith(listed[:-1])
    agents = {line.split()[0]: line for line in section_lines("agents")}
    assert "module docstring" not in agents["customer"] and agents["customer"].endswith("only when asked.")
    # which world and role kind each agent plays, as validate and the schema know it
    assert agents["customer"].split()[1:3] == ["retail,", "user"] and agents["oracle"].split()[1:3] == ["retail,",
                                                                                                        "assistant"]
    assert agents["llm"].split()[1:3] == ["any", "world"] and agents["boulware"].split()[1] == "bargaining"

    schema = json_schema()
    task_type = schema["$defs"]["TaskSpec"]["properties"]["type"]["anyOf"][0]
    assert dict(zip(task_type["enum"], task_type["markdownEnumDescriptions"]))["negotiate"] == f"bargaining: {full}"
    agent_type = schema["$defs"]["AgentSpec"]["properties"]["type"]["anyOf"][0]
    described = dict(zip(agent_type["enum"], agent_type["markdownEnumDescriptions"]))
    assert described["customer"] == "A scripted customer who reveals facts only when asked."
