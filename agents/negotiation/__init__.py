"""Scripted negotiation strategies (time-based, tit-for-tat, random-offer, hard-liner).

Importing this package registers them as agents: ``time_based``, ``boulware``, ``linear``,
``conceder``, ``tit_for_tat``, ``random_offer``, ``hardliner``.
"""

from simworld.agents.negotiation.strategies import (
    Boulware,
    Conceder,
    Hardliner,
    Linear,
    NegotiationStrategy,
    RandomOffer,
    TimeBased,
    TitForTat,
)

__all__ = ["Boulware", "Conceder", "Hardliner", "Linear", "NegotiationStrategy", "RandomOffer", "TimeBased",
           "TitForTat"]
