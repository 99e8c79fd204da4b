"""A world that builds or answers differently must raise its `version` ClassVar.

Every record stamps ``world.version``; replay uses it to tell a run recorded by another version of
a world from an altered record. This module makes that a checked rule: for every built-in world
(and the suite's ledger world) it builds the world at small fixed params and a fixed seed, samples
a few tasks of every task type registered for it, and replays each task's gold plan (a bargaining
task has none: a fixed protocol walk stands in) on a fresh state. The fingerprint is a set of
SHA-256 digests over canonical JSON and raw column bytes:

* ``params``: the validated world params (a changed default shows here);
* ``data``: every table column's bytes, the vocabularies, the indexes and the data fingerprint
  records carry;
* ``tasks <type>``: each sampled task as records store it (goal, private info and briefs, gold
  plan, expected state hash) with its instructions and the state the sample left;
* ``answers <type>``: every tool result of the gold plan (content, error, turn and episode ends,
  notices) and the state it leads to;
* ``specs``: the tool specs and each role kind's default system prompt (records hold both, and
  replay compares them).

They are compared with ``tests/data/world_fingerprints.json``. After raising a world's version,
record the new fingerprints with ``python tests/test_world_versions.py --update``; the update
refuses to record a world that changed at the same version.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ledger_world, when run as a script

import ledger_world  # noqa: E402,F401  (registers the ledger world)

from simworld import registry  # noqa: E402
from simworld.task import TaskInstance  # noqa: E402
from simworld.types import ToolCall  # noqa: E402
from simworld.world import State, World  # noqa: E402

FINGERPRINTS = Path(__file__).resolve().parent / "data" / "world_fingerprints.json"
FINGERPRINTS_NAME = "tests/data/world_fingerprints.json"
UPDATE = "python tests/test_world_versions.py --update"

WORLD_SEED = 7
TASK_SEEDS = (0, 1, 2)
TOOL_SEED = 11
OUR_WORLDS = ("ledger",)
"""Worlds of this test suite fingerprinted besides the built-in ones."""

# Small, fixed params; whatever is left out is the world's default, so a changed default shows.
WORLD_PARAMS: dict[str, dict[str, Any]] = {
    "retail": {"n_orders": 300},
    "ledger": {"n_accounts": 20},
    "bargaining": {
        "subject": "a used bicycle",
        "max_rounds": 6,
        "deadline_cost": 0.01,
        "issues": {
            "price": {"range": [200, 500], "step": 25, "prefix": "$", "phrase": "a price of {value}"},
            "warranty_months": {"values": [0, 3, 6], "suffix": "-month", "labels": {0: "no warranty"}},
            "delivery": {"values": ["pickup", "courier"], "labels": {"pickup": "pickup at the shop"}},
        },
        "parties": {
            "buyer": {
                "brief": "You commute by bike and need one soon.",
                "temperaments": [{"name": "calm", "text": "You are in no hurry.", "concession": 0.8},
                                 {"name": "pressed", "text": "You need it this week.", "concession": 1.5,
                                  "anchor": -0.2, "remarks": ["I need it soon."]}],
                "weights": {"price": 0.6, "warranty_months": 0.25, "delivery": 0.15},
                "utilities": {"price": {"prefer": "low"}, "warranty_months": {"prefer": "high"},
                              "delivery": {"table": {"pickup": 0.3, "courier": 1.0}}},
                "reservation": 0.3,
            },
            "seller": {
                "brief": "You run a small bike shop.",
                "weights": {"price": 0.7, "warranty_months": 0.2, "delivery": 0.1},
                "utilities": {"price": {"prefer": "high"}, "warranty_months": {"peak": 3},
                              "delivery": {"table": {"pickup": 1.0, "courier": 0.2}}},
                "reservation": 0.25,
            },
        },
        "market": {"city bike": [250, 450], "road bike": [400, 900]},
        "inventory": {"bikes_in_stock": 4, "days_listed": 30},
        "stock": {"owner": "seller", "levels": {"bikes_in_stock": [1, 8]}, "vary": True},
        "policies": {"warranty": {"text": "Used bikes carry at most 3 months of warranty.",
                                  "limits": {"warranty_months": {"max": 3}}},
                     "returns": "Returns within 7 days."},
    },
}
TASK_PARAMS: dict[tuple[str, str], dict[str, Any]] = {
    ("bargaining", "negotiate"): {"reservation_jitter": 0.05, "weight_jitter": 0.2},
}


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(
        value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)).hexdigest()


def _array_into(h: Any, name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "O":
        h.update(f"{name}:object:{array.shape}".encode())
        h.update(orjson.dumps(array.tolist(), option=orjson.OPT_SERIALIZE_NUMPY))
        return
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))  # the same bytes on any machine
    h.update(f"{name}:{little.dtype.str}:{little.shape}".encode())
    h.update(memoryview(little).cast("B"))


def _data_digest(world: World) -> str:
    data = world.data
    h = hashlib.sha256()
    for tname in sorted(data.tables):
        for cname in sorted(data.tables[tname].columns):
            _array_into(h, f"table {tname}.{cname}", data.tables[tname].columns[cname])
    h.update(_digest(data.vocab).encode())
    for iname in sorted(data.indexes):
        value = data.indexes[iname]
        if isinstance(value, np.ndarray):
            _array_into(h, f"index {iname}", value)
        else:
            h.update(f"index {iname}:{_digest(value)}".encode())
    h.update(data.fingerprint.encode())  # what records and state hashes carry
    return h.hexdigest()


def _specs_digest(world: World) -> str:
    """The tool specs and the default system prompts of each role kind: every record holds them and
    replay compares them."""
    names = tuple(world.tools)
    return _digest({"tools": [spec.model_dump(mode="json") for spec in world.tool_specs()],
                    "prompts": {kind: world.default_system_prompt(kind, names) for kind in ("user", "assistant")}})


def _result(result: Any) -> dict[str, Any]:
    return {"content": result.content, "error": result.error, "end_turn": result.end_turn,
            "end_episode": result.end_episode, "notices": [list(n) for n in result.notices]}


def _gold_walk(world: World, task: TaskInstance) -> list[tuple[str, ToolCall]]:
    return [("", call) for call in task.gold_plan]


def _bargaining_walk(world: World, task: TaskInstance) -> list[tuple[str, ToolCall]]:
    """A negotiation has no gold plan: look everything up (and one miss), offer, reject, counter, accept."""
    first, second = task.goal["parties"]
    params = world.params
    offer = task.goal["max_welfare"]["terms"]  # (make_offer takes one argument per issue)
    counter = (task.goal["nash"] or task.goal["max_welfare"])["terms"]
    steps = [(first, "check_market_price", {"item": item}) for item in [*params.market, "unicycle"]]
    steps += [(second, "get_inventory", {})]
    steps += [(second, "check_policy", {"topic": topic}) for topic in params.policies]
    steps += [(first, "make_offer", offer), (second, "reject_offer", {"reason": "too little"}),
              (second, "make_offer", counter), (first, "accept_offer", {})]
    return [(caller, ToolCall(id=f"w{i}", name=name, arguments=args)) for i, (caller, name, args) in enumerate(steps)]


WALKS = {"bargaining": _bargaining_walk}
"""Tool calls replayed per sampled task, for worlds whose tasks have no gold plan to replay."""


def world_names() -> list[str]:
    """The built-in worlds (registered from simworld's own packages) and this suite's."""
    registry.load_builtins()
    return sorted(name for name, cls in registry.WORLDS.items()
                  if cls.__module__.startswith("simworld.") or name in OUR_WORLDS)


def inputs_digest(name: str) -> str:
    """What the fingerprint of `name` is computed from (when this changes, the test changed)."""
    tasks = {t: params for (world, t), params in TASK_PARAMS.items() if world == name}
    # The code that computes the fingerprint is an input too: editing it is not a change of the world.
    code = [inspect.getsource(f) for f in (fingerprint, _data_digest, _specs_digest, _array_into, _result, _digest,
                                           WALKS.get(name, _gold_walk))]
    return _digest({"params": WORLD_PARAMS.get(name, {}), "seed": WORLD_SEED, "task_seeds": TASK_SEEDS,
                    "tool_seed": TOOL_SEED, "tasks": tasks, "code": code})


def fingerprint(name: str) -> dict[str, str]:
    """The digests (by part) of world `name` at its fixed params and seeds."""
    world_cls = registry.get_world(name)
    world = world_cls.load(WORLD_PARAMS.get(name, {}), WORLD_SEED)
    parts = {"params": _digest(world.params.model_dump(mode="json")), "data": _data_digest(world),
             "specs": _specs_digest(world)}
    walk = WALKS.get(name, _gold_walk)
    for task_name, task_cls in sorted(registry.TASKS.get(name, {}).items()):
        generator = task_cls(task_cls.Params.model_validate(TASK_PARAMS.get((name, task_name), {})))
        tasks, answers = [], []
        for seed in TASK_SEEDS:
            state = world.new_state()
            task = generator.sample(world, state, np.random.default_rng(seed))
            tasks.append({"record": task.record().model_dump(mode="json"), "instructions": task.instructions,
                          "state_after_sample": state.state_hash()})
            played: State = state.snapshot()
            rng = np.random.default_rng(TOOL_SEED)
            results = [_result(world.call(played, call, rng, caller=caller)) for caller, call in walk(world, task)]
            answers.append({"results": results, "final_state": played.state_hash()})
        parts[f"tasks {task_name}"] = _digest(tasks)
        parts[f"answers {task_name}"] = _digest(answers)
    return parts


def entry(name: str) -> dict[str, Any]:
    """What the fingerprints file records of world `name`."""
    return {"version": registry.get_world(name).version, "inputs": inputs_digest(name), "parts": fingerprint(name)}


def recorded() -> dict[str, Any]:
    if not FINGERPRINTS.exists():
        return {}
    return orjson.loads(FINGERPRINTS.read_bytes()).get("worlds", {})


def problem(name: str, was: dict[str, Any] | None, now: dict[str, Any] | None) -> str | None:
    """Why world `name`'s entry `now` (None: no longer registered) does not match the recorded `was`
    (None: not recorded), as one line; None when it matches."""
    if now is None:
        return f"world {name!r} is recorded in {FINGERPRINTS_NAME} but no longer registered: run `{UPDATE}`"
    if was is None:
        return f"world {name!r} has no fingerprint in {FINGERPRINTS_NAME}: run `{UPDATE}`"
    if was["version"] != now["version"]:
        return (f"world {name!r} is version {now['version']} but {FINGERPRINTS_NAME} records version "
                f"{was['version']}: run `{UPDATE}` to record it")
    if was["inputs"] != now["inputs"]:
        return (f"the fixed params, seeds or fingerprint code of world {name!r} in tests/test_world_versions.py "
                f"changed since {FINGERPRINTS_NAME} was written: run `{UPDATE}`")
    changed = _changed(was, now)
    if changed:
        return (f"world {name!r} builds or answers differently than version {was['version']} recorded in "
                f"{FINGERPRINTS_NAME}: raise its `version` ClassVar (then run `{UPDATE}`) "
                f"[differs in: {_summary(changed, set(was['parts']))}]")
    added = sorted(set(now["parts"]) - set(was["parts"]))
    if added:  # a new task type: what the world did before is unchanged
        return (f"world {name!r} has parts without a fingerprint in {FINGERPRINTS_NAME} ({', '.join(added)}): "
                f"run `{UPDATE}`")
    return None


def _changed(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The recorded parts that differ now or are gone (a task type removed)."""
    return sorted(p for p in was["parts"] if now["parts"].get(p) != was["parts"][p])


def _summary(changed: list[str], parts: set[str]) -> str:
    """The changed parts in few words: 'data, params, tasks of every type, answers of order_status'."""
    words = [p for p in changed if " " not in p]
    for kind in ("tasks", "answers"):
        types = [p.split(" ", 1)[1] for p in changed if p.startswith(f"{kind} ")]
        total = sum(p.startswith(f"{kind} ") for p in parts)
        if types:
            words.append(f"{kind} of " + ("every type" if len(types) == total > 1 else ", ".join(types)
                                         if len(types) <= 3 else f"{len(types)} of {total} types"))
    return ", ".join(words)


@pytest.mark.parametrize("name", sorted(set(world_names()) | set(recorded())))
def test_world_builds_and_answers_as_its_version_recorded(name):
    now = entry(name) if name in world_names() else None
    message = problem(name, recorded().get(name), now)
    assert message is None, message


def test_a_changed_tool_answer_at_the_same_version_is_caught(monkeypatch):
    was = entry("ledger")
    deposit = ledger_world.LedgerWorld.tools["deposit"]
    original = deposit.fn
    monkeypatch.setattr(deposit, "fn", lambda ctx, **kw: {**original(ctx, **kw), "currency": "EUR"})
    now = entry("ledger")
    assert problem("ledger", was, now) == (
        f"world 'ledger' builds or answers differently than version 1 recorded in {FINGERPRINTS_NAME}: raise its "
        f"`version` ClassVar (then run `{UPDATE}`) [differs in: answers of deposit]")
    monkeypatch.setattr(ledger_world.LedgerWorld, "version", 2)
    assert "is version 2 but" in problem("ledger", was, entry("ledger"))


def test_a_changed_tool_description_or_default_prompt_at_the_same_version_is_caught(monkeypatch):
    was = entry("ledger")
    deposit = ledger_world.LedgerWorld.tools["deposit"]
    monkeypatch.setattr(deposit, "_spec", deposit.spec.model_copy(update={"description": "Put money in."}))
    assert "[differs in: specs]" in problem("ledger", was, entry("ledger"))
    monkeypatch.undo()
    prompt = ledger_world.LedgerWorld.default_system_prompt
    monkeypatch.setattr(ledger_world.LedgerWorld, "default_system_prompt",
                        lambda self, kind, tools=(): prompt(self, kind, tools) + " Be brief.")
    assert "[differs in: specs]" in problem("ledger", was, entry("ledger"))


def test_changed_data_is_caught(monkeypatch):
    was = entry("ledger")
    build = ledger_world.LedgerWorld.build.__func__
    monkeypatch.setattr(ledger_world.LedgerWorld, "_cache", type(World._cache)())  # rebuild, not the cached data
    monkeypatch.setattr(ledger_world.LedgerWorld, "build", classmethod(
        lambda cls, params, rng: build(cls, params.model_copy(update={"n_accounts": params.n_accounts + 1}), rng)))
    assert "[differs in: data, tasks of deposit, answers of deposit]" in problem("ledger", was, entry("ledger"))


def test_a_new_task_type_needs_no_new_version_but_a_removed_one_does():
    was = entry("ledger")
    grown = {**was, "parts": {**was["parts"], "tasks withdraw": "0" * 64, "answers withdraw": "1" * 64}}
    assert problem("ledger", was, grown) == (
        f"world 'ledger' has parts without a fingerprint in {FINGERPRINTS_NAME} (answers withdraw, tasks withdraw): "
        f"run `{UPDATE}`")
    assert "raise its `version` ClassVar" in problem("ledger", grown, was)
    assert problem("ledger", was, was) is None


def test_the_bargaining_walk_plays_the_protocol_through():
    # A walk that only met errors would fingerprint the error messages, not the offers.
    world = registry.get_world("bargaining").load(WORLD_PARAMS["bargaining"], WORLD_SEED)
    task_cls = registry.get_task("bargaining", "negotiate")
    generator = task_cls(task_cls.Params.model_validate(TASK_PARAMS[("bargaining", "negotiate")]))
    state = world.new_state()
    task = generator.sample(world, state, np.random.default_rng(TASK_SEEDS[0]))
    rng = np.random.default_rng(TOOL_SEED)
    results = [world.call(state, call, rng, caller=caller) for caller, call in _bargaining_walk(world, task)]
    assert [r.error for r in results].count(True) == 1  # the unknown market item
    assert results[-1].end_episode == "agreement" and state.vars["status"] == "agreement"


def update(force: bool = False) -> list[str]:
    """Write the fingerprints of every world; refuse (returning why) worlds that changed at the same version."""
    old = recorded()
    worlds, refused = {}, []
    for name in world_names():
        now = entry(name)
        was = old.get(name)
        if (not force and was is not None and was["version"] == now["version"] and was["inputs"] == now["inputs"]
                and _changed(was, now)):
            refused.append(problem(name, was, now))
            worlds[name] = was
        else:
            worlds[name] = now
    body = {"_about": "Written by `python tests/test_world_versions.py --update`: per world, its version and the "
                      "digests of what it builds and answers at fixed params and seeds (tests/test_world_versions.py).",
            "worlds": worlds}
    FINGERPRINTS.parent.mkdir(parents=True, exist_ok=True)
    FINGERPRINTS.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return refused


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check or record the world fingerprints.")
    parser.add_argument("--update", action="store_true", help=f"rewrite {FINGERPRINTS_NAME}")
    parser.add_argument("--force", action="store_true",
                        help="with --update: also record worlds that changed without a new version")
    args = parser.parse_args(argv)
    if args.update:
        refused = update(force=args.force)
        for line in refused:
            print(f"not recorded: {line}", file=sys.stderr)
        print(f"wrote {FINGERPRINTS_NAME}" + (f" ({len(refused)} world(s) kept as recorded)" if refused else ""))
        return 1 if refused else 0
    old = recorded()
    lines = [m for n in sorted(set(world_names()) | set(old))
             if (m := problem(n, old.get(n), entry(n) if n in world_names() else None))]
    print("\n".join(lines) or "all world fingerprints match")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
