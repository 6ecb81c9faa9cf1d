"""The scenes world's ground-truth scoring moved into the package (rewidget.models.scenes_truth)
so notebooks can use it outside a clone; this name stays for the benchmarks and their users."""

from rewidget.models.scenes_truth import *  # noqa: F401,F403
from rewidget.models.scenes_truth import (  # noqa: F401
    components,
    counterfactual_world,
    dilate,
    roof_tips,
    segment_both,
    shape_scores,
)
