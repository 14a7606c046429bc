"""Plots and an HTML report built from a comparison's traces alone (``hybridsgd report``);
the comparison itself is :mod:`hybridsgd.app.compare` (``h.compare``)."""

from hybridsgd.report.build import PLOTS, build_report, summary_rows

__all__ = ["PLOTS", "build_report", "summary_rows"]
