"""The retail world (tau-bench retail semantics): columnar data, Numba-backed tools, store policy, tasks.

Importing this package registers the ``retail`` world, its tools and its task generators.
"""

from . import tasks as _tasks  # noqa: F401  (registers the task generators)
from . import tools as _tools  # noqa: F401  (registers the tools on RetailWorld)
from .data import RetailParams
from .world import RetailWorld

__all__ = ["RetailParams", "RetailWorld"]
