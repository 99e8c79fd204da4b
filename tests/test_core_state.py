"""World framework: overlay state, hashing, diffs, tool execution semantics, tool graph."""

import numpy as np
import pytest

import ledger_world  # noqa: F401  (registers the 'ledger' world)
from simworld.types import ToolCall
from simworld.world import State, ToolError

World = ledger_world.LedgerWorld


@pytest.fixture()
def world():
    return World.load({"n_accounts": 50}, seed=7)


def unfrozen(world):
    return int(np.flatnonzero(world.data.tables["accounts"]["frozen"] == 0)[0])


def frozen(world):
    return int(np.flatnonzero(world.data.tables["accounts"]["frozen"] == 1)[0])


def test_generation_is_deterministic_and_cached(world):
    again = World.load({"n_accounts": 50}, seed=7)
    assert again.data is world.data  # shared, built once per (params, seed)
    other = World.load({"n_accounts": 50}, seed=8)
    assert other.data.fingerprint != world.data.fingerprint
    World._cache.clear()
    rebuilt = World.load({"n_accounts": 50}, seed=7)
    assert rebuilt.data.fingerprint == world.data.fingerprint


def test_base_columns_are_read_only(world):
    with pytest.raises(ValueError):
        world.data.tables["accounts"]["balance"][0] = 1


def test_overlay_set_get_and_revert_restores_hash(world):
    s = world.new_state()
    h0 = s.state_hash()
    base = int(s.get("accounts", "balance", 3))
    s.set("accounts", "balance", 3, base + 10)
    assert s.get("accounts", "balance", 3) == base + 10
    assert world.data.tables["accounts"]["balance"][3] == base  # base untouched
    assert s.state_hash() != h0
    s.set("accounts", "balance", 3, base)  # writing the base value back removes the patch
    assert s.patches == {"accounts": {}} or not s.patches.get("accounts")
    assert s.state_hash() == h0


def test_hash_independent_of_write_order(world):
    a, b = world.new_state(), world.new_state()
    a.set("accounts", "balance", 1, 5)
    a.set("accounts", "balance", 2, 6)
    b.set("accounts", "balance", 2, 6)
    b.set("accounts", "balance", 1, 5)
    assert a.state_hash() == b.state_hash()


def test_hash_covers_world_fingerprint(world):
    other = World.load({"n_accounts": 50}, seed=99)
    assert world.new_state().state_hash() != other.new_state().state_hash()


def test_snapshot_is_independent(world):
    s = world.new_state()
    s.set("accounts", "balance", 1, 123)
    snap = s.snapshot()
    s.set("accounts", "balance", 1, 456)
    assert snap.get("accounts", "balance", 1) == 123
    s.restore(snap)
    assert s.get("accounts", "balance", 1) == 123
    assert s.state_hash() == snap.state_hash()


def test_column_materialises_only_when_patched(world):
    s = world.new_state()
    col = s.column("accounts", "balance")
    assert col is world.data.tables["accounts"]["balance"]
    s.set("accounts", "balance", 4, 999_999)
    col2 = s.column("accounts", "balance")
    assert col2 is not col and col2[4] == 999_999 and col[4] != 999_999


def test_append_rows_and_diff(world):
    s, e = world.new_state(), world.new_state()
    s.append("accounts", {"balance": 1, "frozen": 0})
    diff = s.diff(e)
    assert diff and diff[0].row == "appended"
    e.append("accounts", {"balance": 1, "frozen": 0})
    assert s.diff(e) == [] and s.state_hash() == e.state_hash()


def test_diff_names_fields(world):
    s, e = world.new_state(), world.new_state()
    e.set("accounts", "balance", 9, 1)
    d = s.diff(e)
    assert [(x.table, x.row, x.field, x.expected) for x in d] == [("accounts", "9", "balance", 1)]


def test_tool_call_success_and_errors_leave_state_untouched(world):
    s = world.new_state()
    rng = np.random.default_rng(0)
    ok = world.call(s, ToolCall(id="1", name="deposit", arguments={"account": unfrozen(world), "amount": 3}), rng)
    assert not ok.error and '"balance"' in ok.content
    h = s.state_hash()
    bad_calls = [
        ToolCall(id="2", name="deposit", arguments={"account": frozen(world), "amount": 3}),  # writes, then fails
        ToolCall(id="3", name="deposit", arguments={"account": 10_000, "amount": 3}),
        ToolCall(id="4", name="deposit", arguments={"account": "x", "amount": 3}),
        ToolCall(id="5", name="deposit", arguments={"account": 1}),
        ToolCall(id="6", name="deposit", arguments={"account": 1, "amount": -4}),
        ToolCall(id="7", name="deposit", arguments={"account": 1, "amount": 3, "extra": 1}),
        ToolCall(id="8", name="depositt", arguments={}),
    ]
    for call in bad_calls:
        res = world.call(s, call, rng)
        assert res.error and res.content.startswith("Error:"), call
        assert s.state_hash() == h, call
    assert "did you mean 'deposit'" in world.call(s, bad_calls[-1], rng).content
    assert "missing" in world.call(s, bad_calls[3], rng).content
    assert "unexpected argument" in world.call(s, bad_calls[5], rng).content


def test_tool_specs_are_json_schema(world):
    spec = {s.name: s for s in World.tool_specs()}["deposit"]
    assert spec.description.startswith("Deposit money")
    params = spec.parameters
    assert params["type"] == "object" and set(params["required"]) == {"account", "amount"}
    assert params["properties"]["amount"]["exclusiveMinimum"] == 0
    assert params["additionalProperties"] is False
    assert spec.openai()["function"]["name"] == "deposit"


def test_apply_plan_raises_for_unsolvable(world):
    s = world.new_state()
    with pytest.raises(ToolError):
        world.apply_plan(s, [ToolCall(id="x", name="deposit", arguments={"account": frozen(world), "amount": 1})],
                         np.random.default_rng(0))
    assert s.state_hash() == world.new_state().state_hash()


def test_tool_graph():
    g = World.tool_graph()
    assert g.has_edge("account_id", "deposit") and g.has_edge("deposit", "balance")
    t = World.tool_transitions()
    assert set(t.nodes) == {"get_balance", "deposit", "hang_up"}
