"""Negotiation worlds: multi-issue bargaining between two parties, through tools.

* :mod:`.spec`: scenario parameters (issues, parties' preferences, protocol, information tools).
* :mod:`.world`: the ``bargaining`` world, its protocol tools and hooks.
* :mod:`.task`: the ``negotiate`` task (private preferences and briefs per party).
* :mod:`.space` / :mod:`.kernels` / :mod:`.analysis`: outcome space, utilities, Pareto frontier,
  Nash, Kalai-Smorodinsky and max-welfare points (Numba).
* :mod:`.metrics`: per-trajectory metrics.

Importing this package registers the world and its task.
"""

from simworld.environments.negotiation import task as _task  # noqa: F401
from simworld.environments.negotiation import world as _world  # noqa: F401
from simworld.environments.negotiation.analysis import Analysis, analyse
from simworld.environments.negotiation.space import OutcomeSpace, UtilityModel, utility_model
from simworld.environments.negotiation.world import BargainingWorld, NegotiationRecord, Offer, negotiation_record

__all__ = ["Analysis", "BargainingWorld", "NegotiationRecord", "Offer", "OutcomeSpace", "UtilityModel", "analyse",
           "negotiation_record", "utility_model"]
