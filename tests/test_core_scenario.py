"""Scenario schema: every problem reported with YAML path, line and suggestion."""

import textwrap

import pytest

import ledger_world
from simworld.errors import ScenarioError, SimworldError
from simworld.scenario import (apply_variation, json_schema, load_scenario, parse_overrides, scenario_from_data)

GOOD = textwrap.dedent("""\
    name: ledger_deposit
    world:
      type: ledger
      params:
        n_accounts: 20
    task:
      type: deposit
    first_speaker: user
    roles:
      user:
        kind: user
        agent: {type: ledger_user}
      clerk:
        kind: assistant
        agent:
          type: ledger_clerk
        tools:
          - get_balance
          - deposit
    variations:
      roles.user.agent.polite: [true, false]
    """)


def write(tmp_path, text):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


def problems(tmp_path, text, overrides=None):
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text), overrides)
    return info.value.problems


def test_good_scenario(tmp_path):
    assert ledger_world  # registered
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.name == "ledger_deposit" and sc.role_order() == ["user", "clerk"]
    assert len(sc.content_hash) == 16
    assert apply_variation(sc, {"roles.user.agent.polite": False}).roles["user"].agent.polite is False


def test_misspelt_tool_with_line_and_suggestion(tmp_path):
    text = GOOD.replace("- deposit", "- depositt")
    assert problems(tmp_path, text) == [
        "roles.clerk.tools[1] (line 19): unknown tool 'depositt'; did you mean 'deposit'?"]


def test_every_problem_is_reported(tmp_path):
    text = GOOD.replace("type: ledger_clerk", "type: ledger_clark").replace("first_speaker: user",
                                                                           "first_speaker: usr")
    text = text.replace("type: deposit", "type: depost").replace("n_accounts: 20", "n_acounts: 20")
    found = problems(tmp_path, text)
    joined = "\n".join(found)
    assert "roles.clerk.agent.type (line 16): unknown agent 'ledger_clark'; did you mean 'ledger_clerk'?" in found
    assert "first_speaker (line 8): unknown role 'usr'; did you mean 'user'?" in found
    assert "task.type (line 7): unknown task 'depost'" in joined
    assert "world.params.n_acounts (line 5): unknown field 'n_acounts'; did you mean 'n_accounts'?" in found


def test_unknown_top_level_key_and_wrong_type(tmp_path):
    found = problems(tmp_path, GOOD + "max_turn: 3\nepisodes: lots\n")
    assert "max_turn (line 22): unknown field 'max_turn'; did you mean 'max_turns'?" in found
    assert any(p.startswith("episodes (line 23):") for p in found)


def test_unknown_world(tmp_path):
    found = problems(tmp_path, GOOD.replace("type: ledger\n", "type: ledgr\n"))
    assert found[0] == "world.type (line 3): unknown world 'ledgr'; did you mean 'ledger'?"


@pytest.mark.parametrize("text", ["name: [unclosed", "a: b: c", "\t- x", "- just\n- a list\n", "", "42"])
def test_malformed_yaml_is_one_clear_problem(tmp_path, text):
    found = problems(tmp_path, text)
    assert found and all("\n" not in p for p in found)


def test_agent_params_validated(tmp_path):
    found = problems(tmp_path, GOOD.replace("agent: {type: ledger_user}", "agent: {type: ledger_user, polite: maybe}"))
    assert any(p.startswith("roles.user.agent.polite (line 12):") for p in found)
    found = problems(tmp_path, GOOD.replace("agent: {type: ledger_user}", "agent: {type: ledger_user, politr: 1}"))
    assert "roles.user.agent.politr (line 12): unknown field 'politr'; did you mean 'polite'?" in found


def test_bad_variation_value(tmp_path):
    found = problems(tmp_path, GOOD.replace("[true, false]", "[true, sometimes]"))
    assert any(p.startswith("variations.roles.user.agent.polite[1]") for p in found)
    found = problems(tmp_path, GOOD.replace("roles.user.agent.polite", "roles.nobody.agent.polite"))
    assert any("does not exist" in p for p in found)


def test_overrides(tmp_path):
    p = write(tmp_path, GOOD)
    sc = load_scenario(p, parse_overrides(["world.params.n_accounts=7", "max_turns=9", "roles.clerk.tools=[deposit]"]))
    assert sc.world.params["n_accounts"] == 7 and sc.max_turns == 9 and sc.roles["clerk"].tools == ["deposit"]
    with pytest.raises(ScenarioError) as info:
        load_scenario(p, parse_overrides(["max_turns=many"]))
    assert info.value.problems[0].startswith("max_turns (from --set max_turns):")
    with pytest.raises(ScenarioError) as info:
        load_scenario(p, parse_overrides(["roles.clerk.agent.type=nope"]))
    assert "(from --set roles.clerk.agent.type)" in info.value.problems[0]
    with pytest.raises(SimworldError):
        parse_overrides(["no_equals_sign"])


def test_missing_file(tmp_path):
    with pytest.raises(SimworldError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")
    with pytest.raises(SimworldError, match="is a directory"):
        load_scenario(tmp_path)


def test_yaml_is_loaded_safely(tmp_path):
    found = problems(tmp_path, "!!python/object/apply:os.system ['echo pwned']\n")
    assert found and "malformed YAML" in found[0]


def test_json_schema_describes_format():
    schema = json_schema()
    assert {"name", "world", "task", "roles", "first_speaker", "variations"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_scenario_from_data_programmatic():
    sc = scenario_from_data(ledger_world.scenario_data())
    assert sc.roles["clerk"].tools == ["get_balance", "deposit", "hang_up"]


def test_set_wins_over_variations(tmp_path):
    text = GOOD.replace("variations:\n  roles.user.agent.polite: [true, false]\n",
                        "variations:\n  roles.user.agent.polite: [true, false]\n  max_turns: [5, 6]\n"
                        "  world.params.n_accounts: [10, 20]\n")
    p = write(tmp_path, text)
    assert set(load_scenario(p).variations) == {"roles.user.agent.polite", "max_turns", "world.params.n_accounts"}
    sc = load_scenario(p, parse_overrides(["max_turns=9"]))
    assert set(sc.variations) == {"roles.user.agent.polite", "world.params.n_accounts"} and sc.max_turns == 9
    sc = load_scenario(p, parse_overrides(["world.params={n_accounts: 3}"]))
    assert set(sc.variations) == {"roles.user.agent.polite", "max_turns"}
    # A new agent type drops the variations of the old agent's parameters (ledger_clerk has no 'polite').
    sc = load_scenario(p, parse_overrides(["roles.user.agent.type=ledger_clerk"]))
    assert set(sc.variations) == {"max_turns", "world.params.n_accounts"}
    sc = load_scenario(p, parse_overrides(["variations={}"]))
    assert sc.variations == {}


def test_set_a_variation_by_its_dotted_key(tmp_path):
    """QA: `--set variations.roles.user.agent.polite=[...]` was split into nested mappings and refused
    as 'Input should be a valid list'; the rest of the path is the variation's own key."""
    p = write(tmp_path, GOOD)
    sc = load_scenario(p, parse_overrides(["variations.roles.user.agent.polite=[false]"]))
    assert sc.variations == {"roles.user.agent.polite": [False]}
    sc = load_scenario(p, parse_overrides(["variations.max_turns=[5, 6]", "variations.world.params.n_accounts=[3]"]))
    assert sc.variations == {"roles.user.agent.polite": [True, False], "max_turns": [5, 6],
                             "world.params.n_accounts": [3]}
    # A variation set by --set stays even where another --set sets the same value.
    sc = load_scenario(p, parse_overrides(["max_turns=9", "variations.max_turns=[5, 6]"]))
    assert sc.max_turns == 9 and sc.variations["max_turns"] == [5, 6]
    sc = scenario_from_data({k: v for k, v in ledger_world.scenario_data().items() if k != "variations"},
                            overrides={"variations.max_turns": [7]})
    assert sc.variations == {"max_turns": [7]}


def test_scenario_error_text_holds_every_problem():
    """QA: str(ScenarioError) was '<scenario>: 4 problems'; a Python caller saw none of them."""
    from simworld.errors import one_line

    with pytest.raises(ScenarioError) as info:
        scenario_from_data({"name": "x"})
    assert info.value.problems == ["world: required field missing", "task: required field missing",
                                   "roles: required field missing", "first_speaker: required field missing"]
    assert str(info.value).splitlines() == [f"<scenario>: {p}" for p in info.value.problems]
    assert one_line(info.value) == "<scenario>: world: required field missing (and 3 more problems)"
    with pytest.raises(ScenarioError) as info:
        scenario_from_data({**ledger_world.scenario_data(), "max_turns": 0})
    assert str(info.value) == "<scenario>: max_turns: Input should be greater than or equal to 1"
    assert one_line(info.value) == str(info.value)


def test_set_agent_type_replaces_the_agent(tmp_path):
    p = write(tmp_path, GOOD.replace("agent: {type: ledger_user}", "agent: {type: ledger_user, polite: false}"))
    sc = load_scenario(p, parse_overrides(["roles.user.agent.type=ledger_clerk"]))
    assert sc.roles["user"].agent.model_dump() == {"type": "ledger_clerk"}
    # Parameters given after the type apply to the new agent; the same type keeps the file's parameters.
    sc = load_scenario(p, parse_overrides(["roles.user.agent.type=ledger_user", "roles.user.agent.polite=true"]))
    assert sc.roles["user"].agent.model_dump() == {"type": "ledger_user", "polite": True}
    sc = load_scenario(p, parse_overrides(["roles.user.agent.type=ledger_user"]))
    assert sc.roles["user"].agent.model_dump() == {"type": "ledger_user", "polite": False}


def test_run_records_in_any_json_formatting_are_read(tmp_path):
    """A record re-saved by Python's json (spaces after ':' and ',', or keys reordered) is still
    that episode's record (QA F14); a line that is not JSON says so."""
    import json

    from simworld.cli import main
    from simworld.runio import iter_records, shard_paths

    scenario = write(tmp_path, GOOD)
    run = tmp_path / "run"
    main(["run", str(scenario), "--out", str(run), "--episodes", "4", "-q"])
    shard = shard_paths(run)[0]
    original = list(iter_records(run))
    lines = shard.read_text().splitlines()
    lines[0] = json.dumps(json.loads(lines[0]))  # Python's default separators
    lines[2] = json.dumps(json.loads(lines[2]), sort_keys=True, indent=None, separators=(", ", ": "))
    shard.write_text("\n".join(lines + ["garbage", "[1, 2]", '{"a": 1}']) + "\n")
    problems: list[tuple[str, str]] = []
    assert list(iter_records(run, problems=problems)) == original
    assert problems == [("corrupt", f"{shard.name} line 5: not a JSON record"),
                        ("corrupt", f"{shard.name} line 6: not a JSON record"),
                        ("corrupt", f"{shard.name} line 7: not a trajectory record (no episode_id)")]
    # a record re-saved later supersedes the earlier one, whatever its formatting
    newer = dict(original[1], status="retried")
    shard.write_text(shard.read_text() + json.dumps(newer) + "\n")
    assert [r.get("status") for r in iter_records(run)][1] == "retried"
