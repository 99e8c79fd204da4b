"""A tiny world for testing the core engine without the retail world: accounts with balances."""

from __future__ import annotations

import re
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simworld.agent import Agent, AgentParams
from simworld.registry import register_agent, register_task, register_world
from simworld.task import TaskGenerator, TaskInstance
from simworld.types import ToolCall
from simworld.world import Table, ToolContext, ToolError, World, WorldData


class LedgerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_accounts: int = Field(default=50, ge=1)


@register_world("ledger")
class LedgerWorld(World):
    Params = LedgerParams

    @classmethod
    def build(cls, params: LedgerParams, rng: np.random.Generator) -> WorldData:
        n = params.n_accounts
        return WorldData({"accounts": Table("accounts", {
            "balance": rng.integers(0, 1000, n).astype(np.int64),
            "frozen": (rng.random(n) < 0.2).astype(np.int8),
        })})


def _account(ctx: ToolContext, account: int) -> int:
    if not 0 <= account < ctx.state.data.tables["accounts"].n:
        raise ToolError(f"unknown account {account}")
    return account


@LedgerWorld.tool(consumes=["account_id"], produces=["balance"])
def get_balance(ctx: ToolContext, account: Annotated[int, Field(description="Account number.")]) -> dict:
    """Get the balance of an account."""
    a = _account(ctx, account)
    return {"account": a, "balance": int(ctx.state.get("accounts", "balance", a))}


@LedgerWorld.tool(consumes=["account_id"], produces=["balance"], writes=True)
def deposit(ctx: ToolContext, account: int, amount: Annotated[int, Field(gt=0)]) -> dict:
    """Deposit money into an account. Frozen accounts reject deposits."""
    a = _account(ctx, account)
    ctx.state.set("accounts", "balance", a, ctx.state.get("accounts", "balance", a) + amount)
    if ctx.state.get("accounts", "frozen", a):
        raise ToolError("account is frozen")  # raised after the write: the engine must roll it back
    return {"account": a, "balance": int(ctx.state.get("accounts", "balance", a))}


@LedgerWorld.tool()
def hang_up(ctx: ToolContext) -> str:
    """End the call."""
    ctx.finish_episode("hang_up")
    return "bye"


class DepositParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = 5


@register_task("ledger", "deposit")
class DepositTask(TaskGenerator):
    Params = DepositParams

    def sample(self, world: World, state, rng: np.random.Generator) -> TaskInstance:
        frozen = world.data.tables["accounts"]["frozen"]
        candidates = np.flatnonzero(frozen == 0)
        a = int(candidates[rng.integers(len(candidates))])
        plan = [ToolCall(id="g0", name="deposit", arguments={"account": a, "amount": self.params.amount})]
        expected = world.apply_plan(state, plan, rng)
        new_balance = int(expected.get("accounts", "balance", a))
        return TaskInstance(type="deposit", instance_id=f"deposit-{a}", goal={"account": a},
                            private={"user": {"account": a, "amount": self.params.amount,
                                              "brief": f"You want to deposit {self.params.amount} into {a}."}},
                            gold_plan=plan, expected_state=expected, required_outputs=[str(new_balance)])


class LedgerUserParams(AgentParams):
    polite: bool = True


@register_agent("ledger_user")
class LedgerUser(Agent):
    Params = LedgerUserParams

    async def act(self, view):
        if view.turn == 0:
            return f"Please deposit {view.private['amount']} into account {view.private['account']}."
        return "Thanks! ###STOP###"


@register_agent("ledger_clerk")
class LedgerClerk(Agent):
    async def act(self, view):
        last = view.messages[-1]
        if last.role == "tool":
            balance = re.findall(r'"balance":\s*(\d+)', last.content)[0]
            return f"Done. The balance is now {balance}."
        account, amount = re.findall(r"\d+", last.content)[-1], re.findall(r"\d+", last.content)[0]
        return '{"name": "deposit", "parameters": {"account": %s, "amount": %s}}' % (account, amount)


def scenario_data(**overrides):
    data = {
        "name": "ledger_deposit",
        "world": {"type": "ledger", "params": {"n_accounts": 50}},
        "task": {"type": "deposit"},
        "first_speaker": "user",
        "max_turns": 12,
        "roles": {
            "user": {"kind": "user", "agent": {"type": "ledger_user"}},
            "clerk": {"kind": "assistant", "agent": {"type": "ledger_clerk"},
                      "system_prompt": "You are a bank clerk.",
                      "tools": ["get_balance", "deposit", "hang_up"]},
        },
    }
    data.update(overrides)
    return data
