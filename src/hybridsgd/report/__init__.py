"""Compare policies side by side: run a sweep, then build plots and an HTML report from the
traces alone (``hybridsgd compare``, ``hybridsgd report``)."""

from hybridsgd.report.build import PLOTS, build_report, summary_rows
from hybridsgd.report.compare import compare, label_of

__all__ = ["PLOTS", "build_report", "compare", "label_of", "summary_rows"]
