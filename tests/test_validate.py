"""`simworld validate`: every problem of every file at once, with YAML path, line and suggestion;
exit 2 on any problem, never a traceback."""

import subprocess
import sys
import textwrap

import pytest

import runner_plugin  # noqa: F401  (registers the ledger world and test agents)
import test_core_scenario
from simworld.cli import main

# The core tests' scenario, with a third tool and a scoring list (the line numbers below depend on it).
GOOD = test_core_scenario.GOOD.replace("  - deposit\n", "  - deposit\n      - hang_up\n").replace(
    "variations:", "scoring: []\nvariations:")


def validate(capsys, *args):
    """(exit code, stdout lines, stderr) of `simworld validate ARGS` run in this process."""
    try:
        main(["validate", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_ok_file(tmp_path, capsys):
    p = write(tmp_path, GOOD)
    code, out, _ = validate(capsys, p)
    assert code == 0
    assert out == [f"{p}: OK: ledger_deposit: world ledger, task deposit, roles user (user: ledger_user), "
                   "clerk (assistant: ledger_clerk), 1 variation"]


def test_every_problem_at_once_in_file_order(tmp_path, capsys):
    text = (GOOD.replace("- hang_up", "- hang_upp").replace("type: ledger_clerk", "type: ledger_clark")
            .replace("kind: user", "kind: usr").replace("n_accounts: 20", "n_accounts: many")
            .replace("scoring: []", "scoring: [state_matchh]").replace("first_speaker: user", "first_speaker: usr")
            .replace("[true, false]", "[]") + "episodez: 3\n")
    p = write(tmp_path, text)
    code, out, err = validate(capsys, p)
    assert code == 2 and err.strip() == "1 of 1 scenario file invalid"
    assert out[:5] == [
        f"{p}: world.params.n_accounts (line 5): Input should be a valid integer, unable to parse string as an integer",
        f"{p}: first_speaker (line 8): unknown role 'usr'; did you mean 'user'?",
        f"{p}: roles.user.kind (line 11): Input should be 'user' or 'assistant'",
        f"{p}: roles.clerk.agent.type (line 16): unknown agent 'ledger_clark'; did you mean 'ledger_clerk'?",
        f"{p}: roles.clerk.tools[2] (line 20): unknown tool 'hang_upp'; did you mean 'hang_up'?",
    ]
    # (a suggestion follows when a scorer with a close name is registered)
    assert out[5].startswith(f"{p}: scoring[0] (line 21): unknown scorer 'state_matchh'")
    assert out[6:] == [
        f"{p}: variations.roles.user.agent.polite (line 23): variation has no values",
        f"{p}: episodez (line 24): unknown field 'episodez'; did you mean 'episodes'?",
    ]


@pytest.mark.parametrize("text,expected", [
    ("name: [unclosed\n", "malformed YAML (line 2, column 1)"),
    ("roles:\n  a: 1\n b: 2\n", "malformed YAML"),
    ("- a\n- list\n", "(top level): a scenario must be a YAML mapping"),
    ("", "(top level): a scenario must be a YAML mapping"),
    ("!!python/object/apply:os.system ['true']\n", "malformed YAML"),
    (GOOD.replace("type: ledger\n", "type: ledgr\n"), "world.type (line 3): unknown world 'ledgr'; did you mean 'ledger'?"),
    (GOOD.replace("type: deposit", "type: deposti"), "task.type (line 7): unknown task 'deposti' for world 'ledger'; "
                                                     "did you mean 'deposit'?"),
    (GOOD.replace("roles:\n", "roles: 7\nx:\n"), "roles (line 9): Input should be a valid dictionary"),
    (GOOD.replace("max_turns", "").replace("scoring: []", "max_turns: -3"), "max_turns (line 21): Input should be "
                                                                           "greater than or equal to 1"),
    (GOOD.replace("agent: {type: ledger_user}", "agent: {type: ledger_user, polite: perhaps}"),
     "roles.user.agent.polite (line 12): Input should be a valid boolean"),
    (GOOD.replace("[true, false]", "[true, perhaps]"), "variations.roles.user.agent.polite[1]"),
    (GOOD.replace("roles.user.agent.polite", "roles.nobody.agent.polite"),
     "path 'roles.nobody.agent.polite' does not exist in the scenario"),
])
def test_bad_files_are_named_problems(tmp_path, capsys, text, expected):
    p = write(tmp_path, text)
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert any(line.startswith(f"{p}: ") and expected in line for line in out), out


def test_several_files_and_directories(tmp_path, capsys):
    good = write(tmp_path, GOOD, "a.yaml")
    bad = write(tmp_path, GOOD.replace("- deposit", "- depositt"), "b.yaml")
    code, out, err = validate(capsys, good, bad, tmp_path / "missing.yaml")
    assert code == 2 and err.strip() == "2 of 3 scenario files invalid"
    assert out[0].startswith(f"{good}: OK")
    assert out[1] == f"{bad}: roles.clerk.tools[1] (line 19): unknown tool 'depositt'; did you mean 'deposit'?"
    assert out[2] == f"{tmp_path / 'missing.yaml'}: no such scenario file"
    code, out, _ = validate(capsys, tmp_path)
    assert code == 2 and len(out) == 2 and out[0].startswith(f"{good}: OK")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = validate(capsys, empty)
    assert code == 2 and out == [f"error: no scenario files found in {empty}"]


def test_set_is_validated_the_same_way(tmp_path, capsys):
    p = write(tmp_path, GOOD)
    code, out, _ = validate(capsys, p, "--set", "world.params.n_accounts=0", "--set", "roles.clerk.tools=[deposti]")
    assert code == 2
    assert f"{p}: roles.clerk.tools[0] (from --set roles.clerk.tools): unknown tool 'deposti'; did you mean " \
           "'deposit'?" in out
    assert any("world.params.n_accounts (from --set world.params.n_accounts): Input should be greater than" in line
               for line in out)
    code, out, _ = validate(capsys, p, "--set", "nothing")
    assert code == 2 and out == ["error: --set 'nothing': expected dotted.path=value"]
    code, out, _ = validate(capsys, p, "--set", "a..b=1")
    assert code == 2 and out == ["error: --set 'a..b=1': the path 'a..b' has an empty part; expected "
                                 "dotted.path=value (e.g. roles.support.agent.type=llm)"]
    code, out, _ = validate(capsys, p, "--set", "max_turns=5")
    assert code == 0 and out[0].startswith(f"{p}: OK")


def test_real_process_never_prints_a_traceback(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    deep = write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    proc = subprocess.run([sys.executable, "-m", "simworld", "validate", str(binary), str(deep), str(tmp_path / "x")],
                          capture_output=True, text=True, env=runner_plugin.subprocess_env(), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{binary} (line 1, column 1): not UTF-8 text") and lines[-1] == f"{tmp_path / 'x'}: no such scenario file"


def test_every_variation_problem_at_once(tmp_path, capsys):
    """An empty value list or a missing path no longer hides the bad values of the other variations."""
    text = GOOD.replace("  roles.user.agent.polite: [true, false]\n", textwrap.indent(textwrap.dedent("""\
          roles.user.agent.polite: []
          roles.usr.agent.polite: [true]
          max_turns: [10, -1]
          world.params.n_accounts: [5, many]
          roles.clerk.agent: [{type: ledger_clerk}, {type: ledger_clark}]
          first_speaker: [user, nobody]
          roles.clerk.tools: [[deposit], [depositt]]
        """), "  "))
    p = write(tmp_path, text)
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert out == [f"{p}: {line}" for line in [
        "variations.roles.user.agent.polite (line 23): variation has no values",
        "variations.roles.usr.agent.polite (line 24): path 'roles.usr.agent.polite' does not exist in the scenario; "
        "did you mean 'roles.user.agent.polite'?",
        "variations.max_turns[1] (line 25): value -1 is invalid: Input should be greater than or equal to 1",
        "variations.world.params.n_accounts[1] (line 26): value 'many' is invalid: world.params.n_accounts: Input "
        "should be a valid integer, unable to parse string as an integer",
        "variations.roles.clerk.agent[1] (line 27): value {'type': 'ledger_clark'} is invalid: roles.clerk.agent.type: "
        "unknown agent 'ledger_clark'; did you mean 'ledger_clerk'?",
        "variations.first_speaker[1] (line 28): value 'nobody' is invalid: first_speaker: unknown role 'nobody'",
        "variations.roles.clerk.tools[1] (line 29): value ['depositt'] is invalid: roles.clerk.tools[0]: unknown tool "
        "'depositt'; did you mean 'deposit'?",
    ]]
    # A problem of the scenario itself is reported once, not again for every variation value.
    code, out, _ = validate(capsys, write(tmp_path, GOOD.replace("- hang_up", "- hang_upp")))
    assert code == 2 and len(out) == 1 and "unknown tool 'hang_upp'" in out[0]


def test_set_problems_are_blamed_on_the_set_with_suggestions(tmp_path, capsys):
    p = write(tmp_path, GOOD)
    code, out, _ = validate(capsys, p, "--set", "roles.clrek.agent.type=ledger_clerk")
    assert code == 2 and out == [f"{p}: roles.clrek (from --set roles.clrek.agent.type): unknown role 'clrek'; "
                                 "did you mean 'clerk'?"]
    code, out, _ = validate(capsys, p, "--set", "foo.bar=1")
    assert code == 2 and out == [f"{p}: foo (from --set foo.bar): unknown field 'foo'"]
    code, out, _ = validate(capsys, p, "--set", "variations.max_turns=[]")
    assert code == 2 and out == [f"{p}: variations.max_turns (from --set variations.max_turns): variation has no values"]
    # A whole new role is still added by --set.
    code, out, _ = validate(capsys, p, "--set", "roles.extra={kind: user, agent: {type: ledger_user}}")
    assert code == 0 and "extra (user: ledger_user)" in out[0]


def test_set_messages_name_the_real_problem(tmp_path, capsys):
    """QA: a dotted variation key, an index past a list's end, a missing path and malformed YAML were
    each reported as something else ('Input should be a valid list', 'cannot set inside a list',
    'bad dotted path' without naming --set)."""
    p = write(tmp_path, GOOD)
    # The rest of the path after `variations.` is the variation's own (dotted) key.
    code, out, _ = validate(capsys, p, "--set", "variations.roles.user.agent.polite=[true, maybe]")
    assert code == 2 and out == [
        f"{p}: variations.roles.user.agent.polite[1] (from --set variations.roles.user.agent.polite): value 'maybe' "
        "is invalid: roles.user.agent.polite: Input should be a valid boolean, unable to interpret input"]
    code, out, _ = validate(capsys, p, "--set", "variations.roles.clerk.agent.type=[ledger_clerk]")
    assert code == 0 and out[0].endswith(", 2 variations")
    code, out, _ = validate(capsys, p, "--set", "variations.max_turns=5")
    assert code == 2 and out == [f"{p}: variations.max_turns (from --set variations.max_turns): a variation is a "
                                 "list of values, e.g. --set 'variations.max_turns=[A, B]'"]
    code, out, _ = validate(capsys, p, "--set", "scoring=[state_match, tool_validity]", "--set",
                            "scoring.1=heuristics")
    assert code == 0
    code, out, _ = validate(capsys, p, "--set", "scoring=[state_match, tool_validity]", "--set",
                            "scoring.7=heuristics")
    assert code == 2 and out == [f"{p}: --set scoring.7: index 7 is out of range: scoring has 2 items (0 to 1); "
                                 "to add an item, set the whole list (scoring=[...])"]
    code, out, _ = validate(capsys, p, "--set", "roles.clerk.tools.first=deposit")
    assert code == 2 and out == [f"{p}: --set roles.clerk.tools.first: roles.clerk.tools is a list: 'first' is not "
                                 "an index; roles.clerk.tools has 3 items (0 to 2)"]
    code, out, _ = validate(capsys, p, "--set", "=5")
    assert code == 2 and out == ["error: --set '=5': no path before '='; expected dotted.path=value "
                                 "(e.g. max_turns=20)"]
    code, out, _ = validate(capsys, p, "--set", "roles.clerk.tools=[")
    assert code == 2 and out == ["error: --set 'roles.clerk.tools=[': the value is malformed YAML (column 2): "
                                 "expected the node content, but found '<stream end>'"]
    code, out, _ = validate(capsys, p, "--set", "roles.clerk.persona={name: Ann")
    assert code == 2 and out == ["error: --set 'roles.clerk.persona={name: Ann': the value is malformed YAML "
                                 "(column 11): expected ',' or '}', but got '<stream end>'"]
    # Plain text that YAML cannot read is still set as written.
    code, out, _ = validate(capsys, p, "--set", "roles.clerk.persona=@ann: the clerk: helpful")
    assert code == 0


def test_variation_index_past_a_lists_end_is_a_problem_not_a_traceback(tmp_path, capsys):
    p = write(tmp_path, GOOD.replace("variations:\n", "variations:\n  roles.clerk.tools.5: [deposit]\n"))
    code, out, _ = validate(capsys, p)
    assert code == 2 and out == [
        f"{p}: variations.roles.clerk.tools.5 (line 23): path 'roles.clerk.tools.5' does not exist in the scenario: "
        "index 5 is out of range: roles.clerk.tools has 3 items (0 to 2); to add an item, set the whole list "
        "(roles.clerk.tools=[...])"]


# --- setups that can never produce data (QA F12) and run-level variations (QA F11)

def _retail():
    from pathlib import Path
    return (Path(__file__).resolve().parent.parent / "scenarios" / "retail" / "order_status.yaml").read_text()


def test_agent_of_another_world_is_refused_naming_the_role(tmp_path, capsys):
    p = write(tmp_path, _retail().replace("      type: oracle\n", "      type: boulware\n"))
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert out == [f"{p}: roles.support.agent.type (line 28): agent 'boulware' plays the bargaining world, not "
                   "'retail'; choose an agent of world 'retail' (simworld list agents)"]


def test_every_builtin_agent_is_accepted_by_its_own_world():
    from simworld import registry
    from simworld.scenario import agent_worlds
    registry.load_builtins()
    assert agent_worlds(registry.get_agent("customer")) == ("retail",)
    assert agent_worlds(registry.get_agent("noisy_oracle")) == ("retail",)
    assert agent_worlds(registry.get_agent("hardliner")) == ("bargaining",)
    assert agent_worlds(registry.get_agent("llm")) is None  # any world
    assert agent_worlds(registry.get_agent("ledger_clerk")) is None  # a plugin's agent: any world


def test_no_assistant_role_is_refused(tmp_path, capsys):
    p = write(tmp_path, _retail().replace("kind: assistant", "kind: user"))
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert out[0].startswith(f"{p}: roles (line 18): no role of kind 'assistant' (roles "
                             "'customer', 'support' are all 'user')")
    # and the oracle, which declares it plays the assistant, says so of its role
    assert out[1:] == [f"{p}: roles.support.kind (line 26): agent 'oracle' plays a role of kind 'assistant', not "
                       "'user' (are two roles' kinds or agents swapped?)"]


def test_agent_declaring_its_kinds_refuses_the_other_kind(tmp_path, capsys):
    from simworld import registry
    from simworld.agent import Agent

    class UserOnly(Agent):
        kinds = ("user",)

    registry.AGENTS["qa_user_only"] = UserOnly
    UserOnly.type_name = "qa_user_only"
    try:
        swapped = GOOD.replace("agent: {type: ledger_user}", "agent: {type: ledger_clerk}").replace(
            "type: ledger_clerk\n", "type: qa_user_only\n")
        p = write(tmp_path, swapped)
        code, out, _ = validate(capsys, p)
    finally:
        del registry.AGENTS["qa_user_only"]
    assert code == 2
    assert [line for line in out if "qa_user_only" in line] == [
        f"{p}: roles.clerk.kind (line 14): agent 'qa_user_only' plays a role of kind 'user', not 'assistant' "
        "(are two roles' kinds or agents swapped?)"]


@pytest.mark.parametrize("field", ["name", "episodes", "repeats", "seed", "variations", "description", "scoring", "today"])
def test_run_level_fields_cannot_vary(tmp_path, capsys, field):
    value = {"name": "[a, b]", "episodes": "[1000]", "repeats": "[1, 3]", "seed": "[1, 2]",
             "variations": "[{}]", "description": "[x]", "scoring": "[[]]", "today": "[2024-01-01]"}[field]
    p = write(tmp_path, GOOD + f"  {field}: {value}\n")
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert len(out) == 1 and out[0].startswith(f"{p}: variations.{field} (line 24): {field!r} cannot vary: it ")


def test_world_seed_may_vary(tmp_path, capsys):
    code, out, _ = validate(capsys, write(tmp_path, GOOD + "  world.seed: [1, 2]\n"))
    assert code == 0, out


def test_non_utf8_file_names_the_line(tmp_path, capsys):
    p = tmp_path / "latin1.yaml"
    p.write_bytes(GOOD.replace("name: ledger_deposit", "name: ledger_deposit\ndescription: caf\xe9").encode("latin-1"))
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert out == [f"{p} (line 2, column 17): not UTF-8 text (byte 0xe9); save the file as UTF-8"]


def test_the_shipped_retail_agents_swapped_between_roles_are_refused(tmp_path, capsys):
    text = _retail().replace("type: customer", "type: @@").replace("type: oracle", "type: customer")
    p = write(tmp_path, text.replace("type: @@", "type: oracle"))
    code, out, _ = validate(capsys, p)
    assert code == 2
    assert any("agent 'oracle' plays a role of kind 'assistant', not 'user'" in line for line in out), out
    assert any("agent 'customer' plays a role of kind 'user', not 'assistant'" in line for line in out), out
