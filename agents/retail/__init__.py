"""Scripted retail agents: the customer simulator, the support oracle and its noisy variant.

Importing this package registers ``customer``, ``oracle`` and ``noisy_oracle``.
"""

from . import customer as _customer  # noqa: F401
from . import oracle as _oracle  # noqa: F401
from . import noisy as _noisy  # noqa: F401
