"""What `yaml.safe_load` accepts but a scenario must not: alias bombs, duplicate keys, seeds numpy
cannot take, and YAML 1.1 booleans (`no`) where the author meant a word; each is one clear line at
validate time, and what validates also runs and loads back from the run's scenario.yaml."""

import resource
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

import runner_plugin
import test_core_scenario
from simworld.cli import main
from simworld.errors import ScenarioError, SimworldError
from simworld.scenario import MAX_ALIAS_EXPANSION, load_scenario, parse_overrides

GOOD = test_core_scenario.GOOD


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(path, overrides=None):
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, overrides)
    return info.value.problems


def cli(capsys, *args):
    """(exit code, stdout lines) of `simworld ARGS` in this process; never a traceback."""
    try:
        main([*map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out.splitlines() + err.splitlines()


def bomb(levels: int) -> str:
    """Billion laughs: `levels` lists of 9 aliases of the list before; 9**levels strings in all."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return GOOD + "\n".join(lines).replace("l0:", "x0:", 1) + "\n"


# ----------------------------------------------------------------------------------------------
# Alias bombs


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path):
    """9 levels (387 million strings) under a 3 GB address-space limit: refused in seconds, one line."""
    p = write(tmp_path, bomb(9), "bomb.yaml")
    assert p.stat().st_size < 1000
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "simworld", "validate", str(p)], capture_output=True, text=True,
                          env=runner_plugin.subprocess_env(), timeout=120, preexec_fn=_limit_memory)
    assert time.monotonic() - start < 60
    assert "Traceback" not in proc.stdout + proc.stderr and "MemoryError" not in proc.stdout + proc.stderr
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"{p}: (top level): YAML aliases expand the document by more than "
                                        f"{MAX_ALIAS_EXPANSION:,} nodes (an alias bomb?); write the repeated parts "
                                        "out instead"]


def test_alias_bomb_in_process_and_in_set(tmp_path):
    found = problems(write(tmp_path, bomb(6)))  # 531,441 strings
    assert len(found) == 1 and "alias bomb" in found[0]
    levels = " ".join(f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]," for i in range(1, 9))
    with pytest.raises(SimworldError, match=r"^--set world\.params\.x: YAML aliases expand"):
        parse_overrides([f"world.params.x=[&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol], {levels} end]"])


def test_recursive_alias_is_one_problem(tmp_path):
    found = problems(write(tmp_path, GOOD + "loop: &loop [1, *loop]\n"))
    assert found == ["(line 22): recursive YAML alias (a node that contains itself)"]


def test_sensible_anchors_and_merge_keys_still_work(tmp_path):
    text = textwrap.dedent("""\
        name: anchors
        world: {type: ledger, params: &params {n_accounts: 20}}
        task: {type: deposit}
        first_speaker: user
        roles:
          user:
            kind: user
            agent: {type: ledger_user}
          clerk:
            kind: assistant
            agent: {type: ledger_clerk}
            tools: &tools [get_balance, deposit]
        variations:
          roles.clerk.tools: [*tools, [deposit]]
          world.params: [*params, {<<: *params, n_accounts: 5}]
        """)
    sc = load_scenario(write(tmp_path, text))
    assert sc.variations["roles.clerk.tools"] == [["get_balance", "deposit"], ["deposit"]]
    assert sc.variations["world.params"] == [{"n_accounts": 20}, {"n_accounts": 5}]  # merged, then overridden
    # Aliases repeated below the limit are expanded as before, with the anchor's line.
    small = GOOD + "description: &d ok\n" + "".join(f"x{i}: *d\n" for i in range(3))
    assert "x0 (line 23): unknown field 'x0'" in problems(write(tmp_path, small))


# ----------------------------------------------------------------------------------------------
# Duplicate keys


def test_duplicate_keys_at_any_depth_name_key_and_both_lines(tmp_path, capsys):
    text = GOOD.replace("  clerk:\n", "  user:\n    kind: user\n    agent: {type: ledger_user}\n  clerk:\n")
    text = text.replace("first_speaker: user\n", "first_speaker: user\nmax_turns: 30\nmax_turns: 5\n")
    text += "description: {a: 1, a: 2}\n"
    p = write(tmp_path, text)
    assert problems(p) == [
        "max_turns (line 10): duplicate key 'max_turns' (first at line 9)",
        "roles.user (line 15): duplicate key 'user' (first at line 12)",
        "description.a (line 27): duplicate key 'a' (first at line 27)",
    ]
    code, out = cli(capsys, "validate", p)
    assert code == 2 and out[1] == f"{p}: roles.user (line 15): duplicate key 'user' (first at line 12)"


def test_duplicate_key_spelt_two_ways_and_in_an_aliased_mapping_reported_once(tmp_path):
    text = GOOD.replace("n_accounts: 20", "n_accounts: 20\n    0x10: a\n    16: b")
    text += "description: &d {k: 1, k: 2}\nx: *d\n"
    assert problems(write(tmp_path, text)) == [
        "world.params.16 (line 7): duplicate key '16' (first at line 6)",
        "description.k (line 24): duplicate key 'k' (first at line 24)",
    ]


# ----------------------------------------------------------------------------------------------
# Seeds


@pytest.mark.parametrize("line,expected", [
    ("seed: -1", "seed (line 22): Input should be greater than or equal to 0"),
    ("seed: 18446744073709551616", "seed (line 22): Input should be less than or equal to 18446744073709551615"),
    ("seed: 99999999999999999999999", "seed (line 22): Input should be less than or equal to"),
])
def test_seed_out_of_range_in_the_file(tmp_path, line, expected):
    found = problems(write(tmp_path, GOOD + line + "\n"))
    assert len(found) == 1 and found[0].startswith(expected)


def test_world_seed_and_set_seed_out_of_range(tmp_path):
    p = write(tmp_path, GOOD)
    found = problems(p, parse_overrides(["world.seed=-4"]))
    assert found == ["world.seed (from --set world.seed): Input should be greater than or equal to 0"]
    found = problems(p, parse_overrides([f"seed={2**64}"]))
    assert found == ["seed (from --set seed): Input should be less than or equal to 18446744073709551615"]
    found = problems(write(tmp_path, GOOD.replace("n_accounts: 20", "n_accounts: 20\n  seed: -2"), "w.yaml"))
    assert found == ["world.seed (line 6): Input should be greater than or equal to 0"]
    found = problems(write(tmp_path, GOOD + "  world.seed: [1, -1]\n", "v.yaml"))  # (the run's seed cannot vary at all)
    assert len(found) == 1 and found[0].startswith("variations.world.seed[1] (line 22): value -1 is invalid"), found
    assert load_scenario(p, parse_overrides([f"seed={2**64 - 1}"])).seed == 2**64 - 1


def test_run_seed_option_refused_in_one_line_and_largest_seed_runs(tmp_path, capsys):
    p = runner_plugin.write_scenario(tmp_path / "ledger.yaml")
    for bad in ("-5", str(2**64), "99999999999999999999999"):
        code, out = cli(capsys, "run", p, "--out", tmp_path / f"run{bad}", "-n", "2", "-q", "--seed", bad)
        assert code == 2 and len(out) == 1 and "Invalid value for '--seed'" in out[0], out
        assert not (tmp_path / f"run{bad}").exists()
    code, out = cli(capsys, "run", p, "--out", tmp_path / "big", "-n", "2", "-q", "--seed", str(2**64 - 1))
    assert code == 0, out
    assert load_scenario(tmp_path / "big" / "scenario.yaml").seed == 2**64 - 1


# ----------------------------------------------------------------------------------------------
# YAML 1.1 booleans


BIKE = textwrap.dedent("""\
    name: bike
    world:
      type: bargaining
      params:
        subject: a used road bike
        max_rounds: 8
        issues:
          price: {range: [300, 900], step: 25, prefix: "$"}
          helmet: {values: [no, yes], description: Helmet included}
        parties:
          buyer:
            weights: {price: 0.8, helmet: 0.2}
            utilities:
              price: {prefer: low}
              helmet: {table: {no: 0.0, yes: 1.0}}
            reservation: 0.3
          seller:
            weights: {price: 0.9, helmet: 0.1}
            utilities:
              price: {prefer: high}
              helmet: {table: {no: 1.0, yes: 0.0}}
            reservation: 0.3
    task: {type: negotiate}
    roles:
      buyer:
        kind: assistant
        agent: {type: tit_for_tat}
        tools: [make_offer, accept_offer, reject_offer, walk_away]
      seller:
        kind: assistant
        agent: {type: time_based}
        tools: [make_offer, accept_offer, reject_offer, walk_away]
    first_speaker: seller
    variations:
      roles.buyer.agent: [{type: hardliner}, {type: random_offer}]
    """)


def test_yes_no_values_are_words_that_validate_run_and_load_back(tmp_path, capsys):
    p = write(tmp_path, BIKE)
    sc = load_scenario(p)
    issue = sc.world.params["issues"]["helmet"]
    assert issue["values"] == ["no", "yes"]
    assert sc.world.params["parties"]["buyer"]["utilities"]["helmet"] == {"table": {"no": 0.0, "yes": 1.0}}
    code, out = cli(capsys, "run", p, "--out", tmp_path / "run", "-n", "4", "-q")
    assert code == 0, out
    saved = tmp_path / "run" / "scenario.yaml"
    assert load_scenario(saved).content_hash == sc.content_hash
    code, out = cli(capsys, "validate", saved)
    assert code == 0 and out[0].startswith(f"{saved}: OK"), out


def test_explicit_booleans_fail_validate_as_they_would_fail_run(tmp_path, capsys):
    """`true`/`false` stay booleans; as mapping keys they become text in the run, so validate sees that too."""
    text = (BIKE.replace("[no, yes]", "[false, true]").replace("{no: 0.0, yes: 1.0}", "{false: 0.0, true: 1.0}")
            .replace("{no: 1.0, yes: 0.0}", "{false: 1.0, true: 0.0}"))
    p = write(tmp_path, text)
    code, out = cli(capsys, "validate", p)
    assert code == 2 and out[0] == (f"{p}: world.params.parties.buyer.utilities.helmet (line 15): table scores "
                                    "unknown value 'false'"), out
    code, out = cli(capsys, "run", p, "--out", tmp_path / "run", "-n", "2", "-q")
    assert code == 2 and not (tmp_path / "run").exists()


def test_yes_no_still_set_boolean_fields(tmp_path):
    sc = load_scenario(write(tmp_path, GOOD.replace("{type: ledger_user}", "{type: ledger_user, polite: no}")))
    assert ledger_agent_polite(sc) is False
    assert parse_overrides(["a=no", "b=true", "c=on"]) == {"a": "no", "b": True, "c": "on"}
    assert yaml.safe_load("a: no")["a"] is False  # (what PyYAML alone would have given)


def ledger_agent_polite(sc):
    from simworld import registry
    spec = sc.roles["user"].agent
    return registry.get_agent(spec.type).Params.model_validate(spec.model_dump()).polite
