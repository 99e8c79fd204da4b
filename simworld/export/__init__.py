"""Export trajectories as training data: formats, curation, masks and the dataset card.

`export_runs(run_dirs, ExportOptions(...))` is what `simworld export` calls; see
:mod:`simworld.export.pipeline` (streaming, atomic output), :mod:`~simworld.export.formats`,
:mod:`~simworld.export.curation`, :mod:`~simworld.export.card`, :mod:`~simworld.export.masks` and
:mod:`~simworld.export.dpo`.
"""

from simworld.export.formats import FORMATS
from simworld.export.pipeline import ExportOptions, ExportResult, export_runs

__all__ = ["FORMATS", "ExportOptions", "ExportResult", "export_runs"]
