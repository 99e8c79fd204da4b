"""What `simworld validate` refuses so that no run is wasted (QA s14 findings 4, 6, 7, 8, 10, 12): each
problem is one line with the file, YAML path and line, exit 2, never a traceback."""

import textwrap

import jsonschema
import pytest

import runner_plugin  # noqa: F401  (registers the ledger world and test agents)
import test_core_scenario
from simworld.cli import main
from simworld.errors import ScenarioError, SimworldError
from simworld.scenario import json_schema, parse_overrides, scenario_from_data

LEDGER = test_core_scenario.GOOD  # (line numbers below depend on it)

HAGGLE = textwrap.dedent("""\
    name: tiny_haggle
    world:
      type: bargaining
      params:
        subject: a second-hand bicycle
        issues:
          price: {range: [100, 300], step: 10, prefix: "$", phrase: "a price of {value}"}
          helmet: {values: ["no", "yes"], labels: {"no": no helmet, "yes": a helmet}}
        parties:
          buyer:
            weights: {price: 0.8, helmet: 0.2}
            utilities: {price: {prefer: low}, helmet: {table: {"no": 0.0, "yes": 1.0}}}
            reservation: 0.3
          seller:
            weights: {price: 1.0}
            utilities: {price: {prefer: high}}
            reservation: 0.3
    task: {type: negotiate}
    roles:
      buyer:
        kind: assistant
        agent: {type: tit_for_tat}
        tools: [make_offer, accept_offer, reject_offer, walk_away]
      seller:
        kind: assistant
        agent: {type: hardliner, aspiration: 0.7}
        tools: [make_offer, accept_offer, reject_offer, walk_away]
    first_speaker: buyer
    max_turns: 30
    variations:
      first_speaker: [buyer, seller]
    """)


def run_cli(capsys, *args):
    """(exit code, stdout lines, stderr lines) of `simworld ARGS` run in this process."""
    try:
        main([*map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines(), err.splitlines()


def problems(tmp_path, capsys, text, *options):
    """The problem lines `simworld validate` prints for `text` (without the file name); asserts exit 2."""
    p = tmp_path / "s.yaml"
    p.write_text(text)
    code, out, err = run_cli(capsys, "validate", p, *options)
    assert code == 2, out
    assert err[-1] == "1 of 1 scenario file invalid" or err[-1].startswith("error: "), err
    return [line.removeprefix(f"{p}: ") for line in out] + [line for line in err if line.startswith("error: ")]


def test_both_base_scenarios_are_valid(tmp_path, capsys):
    for text in (LEDGER, HAGGLE):
        (tmp_path / "ok.yaml").write_text(text)
        assert run_cli(capsys, "validate", tmp_path / "ok.yaml")[0] == 0


# -- 4: a scalar YAML reads as a date (or an explicitly tagged type) that its type cannot hold


@pytest.mark.parametrize("text,expected", [
    ("today: 2025-02-29\n" + LEDGER, "today (line 1): '2025-02-29' is not a valid date (day is out of range for "
                                     "month); quote it if it is meant as text"),
    (LEDGER.replace("name: ledger_deposit\n", "name: ledger_deposit\ndescription: 2024-02-30\n"),
     "description (line 2): '2024-02-30' is not a valid date (day is out of range for month); quote it if it is "
     "meant as text"),
    (LEDGER.replace("agent: {type: ledger_user}", "agent: {type: ledger_user}\n    persona: 2024-01-01 25:00:00"),
     "roles.user.persona (line 13): '2024-01-01 25:00:00' is not a valid date (hour must be in 0..23); quote it if "
     "it is meant as text"),
    (LEDGER.replace("n_accounts: 20", "n_accounts: !!int twenty"),
     "world.params.n_accounts (line 5): 'twenty' is not a valid integer (invalid literal for int() with base 10: "
     "'twenty'); quote it if it is meant as text"),
    (LEDGER.replace("polite: [true, false]", "polite: [!!bool maybe, false]"),
     "variations.roles.user.agent.polite[0] (line 21): 'maybe' is not a valid boolean; quote it if it is meant "
     "as text"),
    (LEDGER.replace("n_accounts: 20", "n_accounts: 20\n    2024-02-30: x"),
     "world.params.2024-02-30 (line 6): the key '2024-02-30' is not a valid date (day is out of range for month); "
     "quote it if it is meant as text"),
])
def test_an_impossible_scalar_is_one_line_with_path_and_line(tmp_path, capsys, text, expected):
    assert problems(tmp_path, capsys, text) == [expected]


def test_an_aliased_impossible_date_is_reported_once(tmp_path, capsys):
    text = LEDGER.replace("name: ledger_deposit\n", "name: ledger_deposit\ndescription: &d 2023-02-29\n") + \
        "today: *d\n"
    assert problems(tmp_path, capsys, text) == [
        "description (line 2): '2023-02-29' is not a valid date (day is out of range for month); quote it if it is "
        "meant as text"]


@pytest.mark.parametrize("option,expected", [
    ("today=2024-02-30", "error: --set today: '2024-02-30' is not a valid date (day is out of range for month); "
                         "quote it if it is meant as text"),
    ("roles.user.persona=2024-02-30", "error: --set roles.user.persona: '2024-02-30' is not a valid date (day is "
                                      "out of range for month); quote it if it is meant as text"),
    ("roles.clerk.tools=[get_balance, 2024-13-01, 2024-04-31]",
     "error: --set roles.clerk.tools: [1]: '2024-13-01' is not a valid date (month must be in 1..12); "
     "quote it if it is meant as text"),
])
def test_an_impossible_date_in_a_set_value_is_one_line(tmp_path, capsys, option, expected):
    p = tmp_path / "s.yaml"
    p.write_text(LEDGER)
    for command in (["validate", p], ["run", p, "--out", tmp_path / "run", "--episodes", "1"]):
        code, out, err = run_cli(capsys, *command, "--set", option)
        assert (code, out + err) == (2, [expected])
    assert not (tmp_path / "run").exists()


def test_a_valid_date_still_loads(tmp_path):
    assert str(scenario_from_data({**_ledger_data(), "today": parse_overrides(["today=2024-02-29"])["today"]}).today) \
        == "2024-02-29"


def test_run_refuses_an_impossible_date_before_writing_anything(tmp_path, capsys):
    p = tmp_path / "feb29.yaml"
    p.write_text("today: 2025-02-29\n" + LEDGER)
    code, _, err = run_cli(capsys, "run", p, "--out", tmp_path / "run", "--episodes", "1")
    assert code == 2 and err[0] == (f"error: {p}: today (line 1): '2025-02-29' is not a valid date (day is out of "
                                    "range for month); quote it if it is meant as text")
    assert not (tmp_path / "run").exists()


def _ledger_data():
    import yaml

    return yaml.safe_load(LEDGER)


# -- 6: the bargaining parties are the scenario's roles


def test_parties_that_are_not_the_roles_are_refused(tmp_path, capsys):
    text = HAGGLE.replace("      seller:\n        weights", "      vendor:\n        weights")
    assert problems(tmp_path, capsys, text) == [
        "world.params.parties.vendor (line 14): party 'vendor' is no role of this scenario (roles: buyer, seller); "
        "the parties are keyed by role name",
        "roles.seller (line 24): role 'seller' is not one of the parties in world.params.parties (buyer, vendor): "
        "each role negotiates by its party's preferences"]


def test_a_third_role_is_refused(tmp_path, capsys):
    text = HAGGLE.replace("first_speaker: buyer\n", "  mediator:\n    kind: user\n    agent: {type: llm, model: m}\n"
                          "first_speaker: buyer\n", 1)
    assert problems(tmp_path, capsys, text) == [
        "roles.mediator (line 28): role 'mediator' is not one of the parties in world.params.parties (buyer, "
        "seller): each role negotiates by its party's preferences"]


def test_every_variation_value_of_parties_and_roles_is_checked(tmp_path, capsys):
    vendor = ("{buyer: {weights: {price: 1.0}, utilities: {price: {prefer: low}}, reservation: 0.3}, "
              "vendor: {weights: {price: 1.0}, utilities: {price: {prefer: high}}, reservation: 0.3}}")
    roles = ("{buyer: {kind: assistant, agent: {type: linear}}, merchant: {kind: assistant, agent: {type: linear}}}")
    text = HAGGLE + f"  world.params.parties:\n    - {vendor}\n  roles:\n    - {roles}\n"
    found = problems(tmp_path, capsys, text)
    assert found[0].startswith(f"variations.world.params.parties[0] (line 33): value {{'buyer': ")
    assert found[0].endswith("is invalid: world.params.parties.vendor: party 'vendor' is no role of this scenario "
                             "(roles: buyer, seller); the parties are keyed by role name")
    assert found[1].startswith("variations.world.params.parties[0] (line 33): ") and \
        found[1].endswith("is invalid: roles.seller: role 'seller' is not one of the parties in world.params.parties "
                          "(buyer, vendor): each role negotiates by its party's preferences")
    assert found[2].startswith("variations.roles[0] (line 35): ") and found[2].endswith(
        "is invalid: world.params.parties.seller: party 'seller' is no role of this scenario (roles: buyer, "
        "merchant); the parties are keyed by role name")
    assert found[3].endswith("is invalid: roles.merchant: role 'merchant' is not one of the parties in "
                             "world.params.parties (buyer, seller): each role negotiates by its party's preferences")
    assert len(found) == 4


def test_parties_given_by_set_are_checked(tmp_path, capsys):
    found = problems(tmp_path, capsys, HAGGLE, "--set", "roles.seller.kind=assistant", "--set",
                     "first_speaker=buyer", "--set", "roles={buyer: {kind: assistant, agent: {type: linear}}, "
                     "shop: {kind: assistant, agent: {type: linear}}}")
    assert "world.params.parties.seller (line 14): party 'seller' is no role of this scenario (roles: buyer, shop); " \
        "the parties are keyed by role name" in found


# -- 7: a Llama 3 special token in scenario text that reaches the conversation


@pytest.mark.parametrize("old,new,where", [
    ("agent: {type: ledger_user}", "agent: {type: ledger_user}\n    persona: a <|start_header_id|> person",
     "roles.user.persona (line 13)"),
    ("kind: assistant\n", "kind: assistant\n    system_prompt: 'hi <|eot_id|> there'\n", "roles.clerk.system_prompt "
                                                                                       "(line 15)"),
    ("kind: assistant\n", "kind: assistant\n    system_prompt: 'x <|reserved_special_token_7|>'\n",
     "roles.clerk.system_prompt (line 15)"),
])
def test_a_special_token_in_a_prompt_or_persona_is_refused(tmp_path, capsys, old, new, where):
    token = new.split("<|")[1].split("|>")[0]
    assert problems(tmp_path, capsys, LEDGER.replace(old, new)) == [
        f"{where}: holds the Llama 3 special token <|{token}|>, which is structure, not text: export drops every "
        "sample it reaches (special_tokens_in_text); write it some other way"]


@pytest.mark.parametrize("old,new,where", [
    ("subject: a second-hand bicycle", "subject: a bicycle<|eot_id|>", "world.params.subject (line 5)"),
    ('"yes": a helmet', '"yes": a helmet <|python_tag|>', "world.params.issues.helmet.labels.yes (line 8)"),
    ("reservation: 0.3\n      seller:", "reservation: 0.3\n        brief: 'You <|eom_id|> buy.'\n      seller:",
     "world.params.parties.buyer.brief (line 14)"),
    ("subject: a second-hand bicycle", "subject: a bicycle\n    policies: {'<|image|>': no returns}",
     "world.params.policies.<|image|> (line 6)"),
])
def test_a_special_token_in_world_text_is_refused(tmp_path, capsys, old, new, where):
    token = new.split("<|")[1].split("|>")[0]
    assert problems(tmp_path, capsys, HAGGLE.replace(old, new)) == [
        f"{where}: holds the Llama 3 special token <|{token}|>, which is structure, not text: export drops every "
        "sample it reaches (special_tokens_in_text); write it some other way"]


def test_a_special_token_in_a_variation_or_set_value_is_refused(tmp_path, capsys):
    found = problems(tmp_path, capsys, LEDGER + "  roles.user.persona: [calm, 'cross <|eot_id|>']\n")
    assert found == ["variations.roles.user.persona[1] (line 22): value 'cross <|eot_id|>' is invalid: "
                     "roles.user.persona: holds the Llama 3 special token <|eot_id|>, which is structure, not text: "
                     "export drops every sample it reaches (special_tokens_in_text); write it some other way"]
    found = problems(tmp_path, capsys, LEDGER, "--set", "roles.clerk.system_prompt=a <|begin_of_text|>")
    assert found == ["roles.clerk.system_prompt (from --set roles.clerk.system_prompt): holds the Llama 3 special "
                     "token <|begin_of_text|>, which is structure, not text: export drops every sample it reaches "
                     "(special_tokens_in_text); write it some other way"]


def test_text_that_only_looks_like_markup_is_accepted(tmp_path, capsys):
    text = LEDGER.replace("agent: {type: ledger_user}", "agent: {type: ledger_user}\n    persona: 'likes <b> and |x|'")
    (tmp_path / "ok.yaml").write_text(text)
    assert run_cli(capsys, "validate", tmp_path / "ok.yaml")[0] == 0


# -- 8: a tool listed twice


def test_a_tool_listed_twice_is_refused(tmp_path, capsys):
    text = LEDGER.replace("  - deposit\n", "  - deposit\n      - get_balance\n      - deposit\n")
    assert problems(tmp_path, capsys, text) == [
        "roles.clerk.tools[2] (line 20): tool 'get_balance' is listed twice (first at index 0); list each tool once",
        "roles.clerk.tools[3] (line 21): tool 'deposit' is listed twice (first at index 1); list each tool once"]


def test_a_scorer_listed_twice_is_refused(tmp_path, capsys):
    text = LEDGER + "scoring: [state_match, tool_validity, state_match]\n"
    assert problems(tmp_path, capsys, text) == [
        "scoring[2] (line 22): scorer 'state_match' is listed twice (first at index 0); list each scorer once"]
    schema = json_schema()
    with pytest.raises(jsonschema.ValidationError, match="non-unique"):
        jsonschema.Draft202012Validator(schema).validate({**_ledger_data(), "scoring": ["state_match"] * 2})


def test_the_schema_says_tools_are_unique_and_names_are_ids():
    schema = json_schema()
    data = _ledger_data()
    jsonschema.Draft202012Validator(schema).validate(data)
    data["roles"]["clerk"]["tools"] = ["deposit", "deposit"]
    with pytest.raises(jsonschema.ValidationError, match="non-unique"):
        jsonschema.Draft202012Validator(schema).validate(data)
    for name in ("a/b", "", "two words"):
        with pytest.raises(jsonschema.ValidationError, match="does not match"):
            jsonschema.Draft202012Validator(schema).validate({**_ledger_data(), "name": name})


# -- 10: an unknown name that is close to no registered one may be a plugin's


def test_an_unknown_name_far_from_any_hints_at_a_missing_plugin(tmp_path, capsys):
    text = (LEDGER.replace("type: ledger\n", "type: piggy_bank\n").replace("type: ledger_clerk", "type: bank_teller")
            + "scoring: [politeness_rubric]\n")
    found = problems(tmp_path, capsys, text)
    hint = "(not registered here: is it a plugin's? load the plugin with SIMWORLD_PLUGINS=MODULE or a " \
           "simworld.plugins entry point; simworld list {} shows the registered ones)"
    assert found == [f"world.type (line 3): unknown world 'piggy_bank' {hint.format('worlds')}",
                     f"roles.clerk.agent.type (line 16): unknown agent 'bank_teller' {hint.format('agents')}",
                     f"scoring[0] (line 22): unknown scorer 'politeness_rubric' {hint.format('scorers')}"]
    found = problems(tmp_path, capsys, LEDGER.replace("type: deposit", "type: mortgage_application"))
    assert found == [f"task.type (line 7): unknown task 'mortgage_application' for world 'ledger' "
                     f"{hint.format('tasks')}"]


def test_a_misspelt_name_gets_the_suggestion_not_the_plugin_hint(tmp_path, capsys):
    assert problems(tmp_path, capsys, LEDGER.replace("type: ledger\n", "type: ledgr\n")) == [
        "world.type (line 3): unknown world 'ledgr'; did you mean 'ledger'?"]


# -- 12: a scenario name that ids can hold; labels and peaks of values the issue has


@pytest.mark.parametrize("name", ['"a/b"', '""', '"a\\nb"', "my bank run", "naïve"])
def test_a_name_outside_the_id_charset_is_refused(tmp_path, capsys, name):
    found = problems(tmp_path, capsys, LEDGER.replace("name: ledger_deposit", f"name: {name}"))
    assert len(found) == 1 and found[0].startswith(
        "name (line 1): name must be letters, digits, '_', '.' and '-' only, and not empty: it starts every episode "
        "id (NAME-sSEED-INDEX) and sample id (RUN/EPISODE/ROLE); got ")


@pytest.mark.parametrize("name", ["retail-v2.1", "A_b-3", "x"])
def test_a_name_in_the_id_charset_is_accepted(name):
    assert scenario_from_data({**_ledger_data(), "name": name}).name == name


def test_a_label_for_a_value_the_issue_lacks_is_refused(tmp_path, capsys):
    text = HAGGLE.replace('labels: {"no": no helmet, "yes": a helmet}', 'labels: {"no": no helmet, maybe: perhaps}')
    text = text.replace('prefix: "$"', 'prefix: "$", labels: {100: a bargain, 105: odd, 400: too much}')
    assert problems(tmp_path, capsys, text) == [
        "world.params.issues.price.labels.105 (line 7): '105' is not a value of the issue ([100, 300] in steps of 10); "
        "a label is the text of one of its values",
        "world.params.issues.price.labels.400 (line 7): '400' is not a value of the issue ([100, 300] in steps of 10); "
        "a label is the text of one of its values",
        "world.params.issues.helmet.labels.maybe (line 8): 'maybe' is not a value of the issue (values no, yes); a "
        "label is the text of one of its values"]


@pytest.mark.parametrize("peak,ok", [(1000, False), (99, False), (100, True), (300, True), (215, True)])
def test_a_peak_outside_the_issue_is_refused(tmp_path, capsys, peak, ok):
    text = HAGGLE.replace("utilities: {price: {prefer: low}", f"utilities: {{price: {{peak: {peak}}}")
    if ok:
        (tmp_path / "ok.yaml").write_text(text)
        assert run_cli(capsys, "validate", tmp_path / "ok.yaml")[0] == 0
    else:
        assert problems(tmp_path, capsys, text) == [
            f"world.params.parties.buyer.utilities.price (line 12): peak {peak} is outside the issue's range "
            "[100, 300]; the best value must be within it"]


def test_loading_raises_scenario_error_not_a_bare_exception():
    with pytest.raises(ScenarioError, match="not a valid date"):
        from simworld.scenario import read_yaml

        read_yaml("today: 2025-02-29\n", "x.yaml")
    with pytest.raises(SimworldError, match="not a valid date"):
        parse_overrides(["today=2025-02-29"])


def test_a_located_bargaining_message_keeps_its_braces(tmp_path, capsys):
    text = HAGGLE.replace("weights: {price: 1.0}", 'weights: {price: 1.0, "{cost}": 1.0}')
    assert problems(tmp_path, capsys, text) == [
        "world.params.parties.seller.weights.{cost} (line 15): unknown issue '{cost}'"]


def test_a_run_recorded_before_names_were_restricted_still_reads(tmp_path, monkeypatch, capsys):
    """The name rule is for new scenarios: a run directory made under another name (here, by this
    simworld with the rule lifted, as a version before it) still shows, replays and exports."""
    import re

    import simworld.scenario as scenario_module

    path = tmp_path / "old.yaml"
    path.write_text(LEDGER.replace("name: ledger_deposit", "name: my ledger run"))
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(scenario_module, "SCENARIO_NAME", re.compile(r".+"))
        assert run_cli(capsys, "run", path, "--episodes", 2, "--out", run, "--quiet")[0] == 0
    for args in (("show", run), ("replay", run), ("export", run, "--format", "llama3", "--out", tmp_path / "o.jsonl")):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, (args, err)
        if args[0] == "show":
            assert any("my ledger run-s0-000000" in line for line in out)
    assert problems(tmp_path, capsys, path.read_text())[0].startswith("name (line 1): name must be letters")


SCENARIO_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent / "scenarios"


def test_a_problem_of_a_whole_the_file_holds_names_the_set_inside_it(capsys):
    """The outcome space is checked over all issues (world.params.issues, a line of the file); the
    value that made it too large came from --set: the line says both, and no "Value error, "."""
    path = SCENARIO_DIR / "negotiation" / "supplier_contract.yaml"
    code, out, err = run_cli(capsys, "validate", path, "--set", "world.params.issues.unit_price.step=1e-9")
    assert code == 2
    [line] = [x for x in out if "outcome space" in x]
    assert "world.params.issues (line " in line and ", with --set world.params.issues.unit_price.step): the " \
        "outcome space has 2,400,000,000,400 outcomes" in line and "Value error" not in line


def test_an_exponent_number_yaml_reads_as_text_gets_a_hint(capsys):
    path = SCENARIO_DIR / "retail" / "mixed.yaml"
    code, out, err = run_cli(capsys, "validate", path, "--set", "world.params.n_orders=1e12")
    assert code == 2
    assert any(line.endswith("world.params.n_orders (from --set world.params.n_orders): Input should be a valid "
                             "integer, unable to parse string as an integer (YAML reads 1e12 as text; write the "
                             "number as 1000000000000)") for line in out + err), out + err
    code, out, err = run_cli(capsys, "validate", path, "--set", "world.params.n_orders=1000000000000")
    assert code == 2 and any("less than or equal to" in line for line in out + err)


# -- today's rules are for new scenarios: a run recorded before them still reads (review s14 findings 1, 2, 7)


def _record_without_todays_rules(tmp_path, monkeypatch, capsys, name, text):
    """A run directory of `text` made as a simworld before today's validate rules made it: the run
    command validates the scenario's structure only (the checks all versions share), then runs it."""
    import simworld.runner as runner_module
    from simworld.scenario import Scenario, read_yaml, to_jsonable_python

    def structure_only(path, overrides=None):
        assert not overrides
        data, _ = read_yaml(path.read_text() if hasattr(path, "read_text") else open(path).read(), str(path))
        return Scenario.model_validate(to_jsonable_python(data))

    path, run = tmp_path / f"{name}.yaml", tmp_path / name
    path.write_text(f"name: {name}\n" + text.split("\n", 1)[1])
    with monkeypatch.context() as m:
        m.setattr(runner_module, "load_scenario", structure_only)
        code, out, err = run_cli(capsys, "run", path, "--episodes", 2, "--out", run, "--quiet")
    # (parties that are not the roles failed every episode, as the run says with exit 1: recorded all the same)
    assert code == (1 if name == "parties_not_roles" else 0), err
    return path, run


PEAK_36 = HAGGLE.replace("utilities: {price: {prefer: low}", "utilities: {price: {peak: 360}")
OLD_RULES = {  # name: (scenario text, what validate now says of it)
    "tool_twice": (LEDGER.replace("  - deposit\n", "  - deposit\n      - deposit\n"),
                   "roles.clerk.tools[2] (line 20): tool 'deposit' is listed twice"),
    "scorer_twice": (LEDGER + "scoring: [state_match, state_match]\n",
                     "scoring[1] (line 22): scorer 'state_match' is listed twice"),
    "special_token": (LEDGER.replace("agent: {type: ledger_user}", "agent: {type: ledger_user}\n    persona: a <|eot_id|>"),
                      "roles.user.persona (line 13): holds the Llama 3 special token <|eot_id|>"),
    "label_off": (HAGGLE.replace('"yes": a helmet}', '"yes": a helmet, maybe: perhaps}'),
                  "world.params.issues.helmet.labels.maybe (line 8): 'maybe' is not a value of the issue"),
    "peak_out": (PEAK_36, "world.params.parties.buyer.utilities.price (line 12): peak 360 is outside the issue's "
                 "range [100, 300]; the best value must be within it"),
    "parties_not_roles": (HAGGLE.replace("      seller:\n        weights", "      vendor:\n        weights"),
                          "world.params.parties.vendor (line 14): party 'vendor' is no role of this scenario"),
}


@pytest.mark.parametrize("rule", list(OLD_RULES))
def test_a_run_recorded_before_todays_rules_still_shows_replays_scores_and_exports(tmp_path, monkeypatch, capsys,
                                                                                    rule):
    text, refusal = OLD_RULES[rule]
    path, run = _record_without_todays_rules(tmp_path, monkeypatch, capsys, rule, text)
    for args in (("show", run), ("show", run, "--episode", f"{rule}-s0-000001"), ("replay", run), ("score", run),
                 ("export", run, "--format", "llama3", "--out", tmp_path / "o.jsonl")):
        code, out, err = run_cli(capsys, *args)
        assert code == 0, (args, out, err)
        if args[0] == "replay":
            assert out[-1].endswith("all match") or err[-1].endswith("all match"), (out, err)
        if args[0] == "score":
            assert not any("damaged" in line or "skipped" in line for line in out + err), (out, err)
    assert any(line.startswith(refusal) for line in problems(tmp_path, capsys, path.read_text()))


@pytest.mark.parametrize("text", [LEDGER, OLD_RULES["scorer_twice"][0]], ids=["name", "name_and_scorer_twice"])
def test_a_fork_with_set_of_a_run_recorded_before_todays_rules_checks_only_what_set_changes(tmp_path, monkeypatch,
                                                                                          capsys, text):
    import re

    import simworld.scenario as scenario_module

    path = tmp_path / "old.yaml"
    path.write_text(text.replace("name: ledger_deposit", "name: my ledger run"))
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setattr(scenario_module, "SCENARIO_NAME", re.compile(r".+"))
        m.setattr(scenario_module, "_check_semantics_data", lambda data, problems, *_: None)
        assert run_cli(capsys, "run", path, "--episodes", 1, "--out", run, "--quiet")[0] == 0
    episode = "my ledger run-s0-000000"
    code, out, err = run_cli(capsys, "replay", run, "--episode", episode, "--fork-at", 2, "--out", tmp_path / "f",
                             "--set", "roles.user.persona=calm", "--set", "max_turns=30")
    assert code == 0, err
    assert (tmp_path / "f" / "trajectories-forks.jsonl").read_text().count(f'"{episode}-fork2-') == 1
    # what --set brings in is new, and today's rules apply to it
    code, out, err = run_cli(capsys, "replay", run, "--episode", episode, "--fork-at", 2, "--out", tmp_path / "g",
                             "--set", "roles.user.persona=a <|eot_id|>")
    assert code == 2 and err == [
        f"error: {run}/scenario.yaml: roles.user.persona (from --set roles.user.persona): holds the Llama 3 special "
        "token <|eot_id|>, which is structure, not text: export drops every sample it reaches "
        "(special_tokens_in_text); write it some other way"]
    assert not (tmp_path / "g").exists()


@pytest.mark.parametrize("peak", [105, 215])
def test_a_peak_between_an_issues_values_is_accepted(tmp_path, capsys, peak):
    """The peak may lie between grid values (the range is the rule, as the message says)."""
    (tmp_path / "ok.yaml").write_text(HAGGLE.replace("utilities: {price: {prefer: low}",
                                                     f"utilities: {{price: {{peak: {peak}}}"))
    assert run_cli(capsys, "validate", tmp_path / "ok.yaml")[0] == 0


@pytest.mark.parametrize("text", [*(text for text, _ in OLD_RULES.values()),
                                  LEDGER + "variations:\n  roles.user.persona: [calm, 'cross <|eot_id|>']\n"],
                         ids=[*OLD_RULES, "variation_value"])
def test_a_recorded_scenario_is_not_held_to_todays_rules_and_a_new_one_is(text):
    import yaml

    data = yaml.safe_load(text)
    assert scenario_from_data(data, recorded=True).name == data["name"]
    with pytest.raises(ScenarioError):
        scenario_from_data(data)
