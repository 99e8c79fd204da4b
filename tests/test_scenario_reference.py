"""docs/scenarios.md and `simworld schema` describe the whole scenario format (QA F15): every
scenario field, and every parameter of every built-in world, task and agent."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from simworld import registry
from simworld.reference import REFERENCE_BEGIN, REFERENCE_END
from simworld.scenario import RoleSpec, Scenario, TaskSpec, WorldSpec, json_schema, read_yaml, scenario_from_data

DOC = Path(__file__).resolve().parent.parent / "docs" / "scenarios.md"
REGENERATE = 'regenerate it: python -c "from simworld.reference import update_reference; update_reference()"'


def doc_text():
    return DOC.read_text(encoding="utf-8")


def generated_part():
    text = doc_text()
    return text.split(REFERENCE_BEGIN, 1)[1].split(REFERENCE_END, 1)[0]


def sections(text):
    """{heading: body} of the generated part's ### / #### sections."""
    parts = re.split(r"^(#{3,4} .*)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def builtin(cls):
    return cls.__module__.startswith("simworld.")


def params_models():
    """(kind, registered name, Params model) of every built-in world, task generator and agent."""
    registry.load_builtins()
    out = []
    for world, cls in registry.WORLDS.items():
        if builtin(cls):
            out.append(("World", world, cls.Params))
            out += [("Tasks of", f"{world}`: `{task}", tcls.Params)
                    for task, tcls in registry.TASKS.get(world, {}).items() if builtin(tcls)]
    out += [("Agent", name, cls.Params) for name, cls in registry.AGENTS.items() if builtin(cls)]
    return out


def nested_fields(model, seen=None):
    """Every field name of the model and of the models its fields hold (IssueSpec, PartySpec, ...)."""
    from simworld.reference import _nested_models
    seen = seen if seen is not None else set()
    if model in seen:
        return []
    seen.add(model)
    names = []
    for name, field in model.model_fields.items():
        names.append((model.__name__, name))
        for sub in _nested_models(field.annotation):
            names += nested_fields(sub, seen)
    return names


def test_every_param_of_every_builtin_world_task_and_agent_is_documented_in_its_section():
    found = sections(generated_part())
    models = params_models()
    assert {kind for kind, _, _ in models} == {"World", "Tasks of", "Agent"}
    for kind, name, model in models:
        heading = [h for h in found if h.split(" ", 1)[1].startswith(kind) and f"`{name}`" in h]
        if kind == "Tasks of":  # tasks sharing a model share a section: `retail`: `a`, `b`, ...
            world, task = name.split("`: `")
            heading = [h for h in found if h.startswith("#### Tasks of ") and f"`{world}`:" in h and f"`{task}`" in h]
        assert len(heading) == 1, f"no section for {kind} {name!r} in {DOC.name}: {REGENERATE}"
        body = found[heading[0]]
        for owner, field in nested_fields(model):
            if field == "type" and kind == "Agent":
                continue  # agent.type is the agent's name, documented with roles
            assert f"| `{field}` |" in body, f"{owner}.{field} ({kind} {name}) is not in {DOC.name}: {REGENERATE}"


def test_generated_tables_are_current():
    # In a fresh interpreter, as `update_reference` is run: the tables follow the registry's order,
    # which in this process depends on which test module imported a world first.
    code = "from simworld.reference import reference_tables; import sys; sys.stdout.write(reference_tables())"
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert generated_part().strip() == fresh.strip(), f"{DOC.name} is stale: {REGENERATE}"


def test_every_scenario_field_is_in_the_reference():
    text = doc_text()
    for model, prefix in ((Scenario, ""), (WorldSpec, "world."), (TaskSpec, "task."), (RoleSpec, "roles.NAME.")):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"scenario field {prefix}{name} is not in {DOC.name}"


def test_every_schema_property_has_a_description():
    schema = json_schema()
    missing = []

    def walk(node, where):
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if not prop.get("description"):
                    missing.append(f"{where}.{name}")
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    walk(schema, "")
    props = [k for d in [schema] + list(schema.get("$defs", {}).values()) for k in d.get("properties", {})]
    assert len(props) >= len(Scenario.model_fields) + 3 + 2 + 5
    assert missing == []


@pytest.mark.parametrize("index", [0, 1])
def test_worked_examples_validate(index):
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc_text(), re.S) if b.startswith("name:")]
    assert len(blocks) == 2
    data, lines = read_yaml(blocks[index], f"docs example {index}")
    sc = scenario_from_data(data, lines, f"docs example {index}")
    assert sc.variations and sc.roles
