"""Predict before you run (docs/design.md section 5): time per update, throughput, staleness,
wasted work, stability and speed, from a policy, W and a timing model.

>>> from hybridsgd.analysis import predict
>>> from hybridsgd.timing import parse_model
>>> p = predict("backup", 34, parse_model("shifted-exp:delta=1,mu=2"), backups=2)
>>> round(p.mean_update_time, 3)
2.309
"""

from hybridsgd.analysis.curvature import largest_eigenvalue
from hybridsgd.analysis.measure import measure
from hybridsgd.analysis.order_stats import expected_kth, kth_quantiles
from hybridsgd.analysis.predict import ASYNC_FAMILY, SYNC_FAMILY, Prediction, Stability, predict
from hybridsgd.analysis.stability import (
    discrete_max_stable,
    discrete_radius,
    largest_stable,
    levin_may,
    rightmost_root,
)

__all__ = [
    "ASYNC_FAMILY",
    "SYNC_FAMILY",
    "Prediction",
    "Stability",
    "discrete_max_stable",
    "discrete_radius",
    "expected_kth",
    "kth_quantiles",
    "largest_eigenvalue",
    "largest_stable",
    "levin_may",
    "measure",
    "predict",
    "rightmost_root",
]
