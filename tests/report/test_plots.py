"""Every plot of a comparison, with 2 and 12 policies: a title, labelled axes, a legend
beside the axes (never over the data, never cut off), and a distinct style per policy."""

from __future__ import annotations

import io

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from hybridsgd.config import Config
from hybridsgd.report import PLOTS
from hybridsgd.report.build import _runs, plots, styles, summary_rows
from hybridsgd.report.compare import compare

TWELVE = [
    "sync",
    "backup:b=2",
    "async",
    "k_sync:k=6",
    "k_batch_sync:k=6",
    "k_async:k=4",
    "k_batch_async:k=4",
    "ssp:s=2",
    "psp:beta=3,s=2",
    "hybrid:threshold=linear:start=0,end=30,progress=time",
    "adaptive",
    "backup:b=4",
]


@pytest.fixture(scope="module", params=[2, 12], ids=["2-policies", "12-policies"])
def figures(request, tmp_path_factory):
    base = Config.from_dict(
        {
            "task": {"name": "mlp-digits", "batch_size": 16},
            "policy": {"workers": 8},
            "timing": {"compute": "pareto:alpha=1.8,scale=1"},
            "run": {"time": 100.0, "eval_every": 10, "target_accuracy": 0.5},
        }
    )
    out = tmp_path_factory.mktemp("plots")
    compare(base, TWELVE[: request.param], 1, out, jobs=1)
    groups = _runs(out)
    figs = plots(groups, summary_rows(groups))
    for fig in figs.values():
        FigureCanvasAgg(fig).print_png(io.BytesIO())  # lay out and draw, as savefig does
    return groups, figs


def test_every_plot_has_a_title_and_labelled_axes(figures):
    _, figs = figures
    assert list(figs) == list(PLOTS)
    for name, fig in figs.items():
        titles = [ax.get_title() or ax.get_title("left") for ax in fig.axes]
        assert (fig._suptitle is not None) or all(titles), name
        for ax in fig.axes:
            assert ax.get_ylabel(), name
        assert fig.axes[-1].get_xlabel(), name


def test_legends_sit_beside_the_axes_inside_the_figure(figures):
    groups, figs = figures
    for name, fig in figs.items():
        page = fig.bbox
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            box, area = legend.get_window_extent(), ax.get_window_extent()
            assert box.x0 >= area.x1, f"{name}: the legend overlaps the axes"
            assert page.x0 <= box.x0 and box.x1 <= page.x1 + 1, f"{name}: legend cut off"
            assert box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1, f"{name}: legend cut off"
        if name in ("loss_vs_time.png", "staleness.png"):
            entries = fig.axes[0].get_legend().get_texts()
            assert [t.get_text().split(" (")[0] for t in entries] == list(groups), name


def test_no_text_is_cut_off_or_overlaps(figures):
    """Tick labels (long policy names in time_to_target) and the timeline's per-policy
    titles stay inside the figure, and the titles do not overlap each other."""
    _, figs = figures
    for name, fig in figs.items():
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            for label in ax.get_yticklabels():
                if label.get_text():
                    assert label.get_window_extent(renderer).x0 >= -1, (name, label.get_text())
    timeline = figs["timeline.png"]
    boxes = [ax.title.get_window_extent() for ax in timeline.axes]
    for a, b in zip(boxes, boxes[1:], strict=False):
        assert a.y0 >= b.y1, "timeline titles overlap"
    assert all(ax.get_ylabel() == "worker" for ax in timeline.axes)


def test_every_policy_keeps_its_own_style(figures):
    groups, _ = figures
    style = styles(groups)
    looks = {(s["color"], s["linestyle"], s["marker"]) for s in style.values()}
    assert len(looks) == len(groups)
    if "backup_b-2" in style and "backup_b-4" in style:  # one family, one colour
        assert style["backup_b-2"]["color"] == style["backup_b-4"]["color"]


def test_arrival_order_shows_only_policies_that_run_in_rounds(figures):
    groups, figs = figures
    legend = figs["arrival_order.png"].axes[0].get_legend()
    shown = {t.get_text() for t in legend.get_texts()} if legend else set()
    assert "sync" in shown
    assert not shown & {"async", "ssp_s-2", "psp_beta-3_s-2", "k_async_k-4"}
