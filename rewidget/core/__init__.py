"""The rewriting engine: torch math only (no widget imports). See README.md in this folder."""

from .directions import CovarianceInverse, context_directions, context_keys
from .edits import Edit, compute_edit
from .errors import Cancelled, RewriteError
from .history import EditHistory
from .memory import LinearMemory, memory_for
from .requests import EditRequest, Paste, Sample, Selection, from_paper_json
from .solve import masked_errors, solve_exact, solve_iterative
from .statistics import SecondMoment, cached_second_moment, collect_second_moment

__all__ = ["Cancelled", "CovarianceInverse", "Edit", "EditHistory", "EditRequest", "LinearMemory",
           "Paste", "RewriteError", "Sample", "SecondMoment", "Selection", "cached_second_moment",
           "collect_second_moment", "compute_edit", "context_directions", "context_keys",
           "from_paper_json", "masked_errors", "memory_for", "solve_exact",
           "solve_iterative"]
