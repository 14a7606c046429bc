"""Every plot of a comparison, with 2 and 12 policies: a title, labelled axes, a legend
beside the axes (never over the data, never cut off), and a distinct style per policy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from hybridsgd.app.compare import compare
from hybridsgd.config import Config
from hybridsgd.report import PLOTS
from hybridsgd.report.build import _runs, plots, styles, summary_rows

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


# the 12-policy comparison takes seconds: its tests are marked slow (CI runs them)
@pytest.fixture(
    scope="module",
    params=[
        pytest.param(2, id="2-policies"),
        pytest.param(12, id="12-policies", marks=pytest.mark.slow),
    ],
)
def figures(request, tmp_path_factory):
    # two policies: sync and async (issue 34's case); twelve: all of TWELVE
    base = Config.from_dict(
        {
            "task": {"name": "mlp-digits", "batch_size": 16},
            "policy": {"workers": 16},  # as the demo: asynchronous timelines were walls there
            "timing": {"compute": "pareto:alpha=1.8,scale=1"},
            "run": {"time": 100.0, "eval_every": 10, "target_accuracy": 0.5},
        }
    )
    out = tmp_path_factory.mktemp("plots")
    compare(base, ["sync", "async"] if request.param == 2 else TWELVE, 1, out, jobs=1)
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


def one_colour_share(fig) -> list[tuple[str, float]]:
    """For each panel drawn mostly in filled areas (painted pixels, those not near-white,
    cover at least 30% of it: bars, not lines), the share of its painted pixels within a
    small distance of its most common colour (antialiased edges count with their colour)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    height = pixels.shape[0]
    out = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        panel = pixels[
            int(height - box.y1) + 2 : int(height - box.y0) - 2,
            int(box.x0) + 2 : int(box.x1) - 2,
        ].reshape(-1, 3)
        painted = panel[(panel < 230).any(axis=1)].astype(int)
        if len(painted) < 0.3 * len(panel):
            continue
        colours, counts = np.unique(painted // 8, axis=0, return_counts=True)
        mode = colours[counts.argmax()] * 8 + 4
        share = float((np.linalg.norm(painted - mode, axis=1) < 80).mean())
        out.append((ax.get_title(loc="left") or ax.get_title(), share))
    return out


def test_no_panel_is_a_wall_of_one_colour(figures):
    """Issue 34: the timelines of asynchronous policies were solid green walls (97% of
    their painted pixels one green on the demo's runs). No filled panel of any plot is more
    than 90% one colour now. time_to_target.png is left out: one bar per policy is one
    colour by design, and a long one may fill most of the panel."""
    groups, figs = figures
    if "async" in groups:  # the async panel is one of those checked
        assert any(t.startswith("async") for t, _ in one_colour_share(figs["timeline.png"]))
    for name, fig in figs.items():
        if name == "time_to_target.png":
            continue
        for title, share in one_colour_share(fig):
            assert share <= 0.9, f"{name}, {title}: {share:.0%} one colour"


def test_accuracy_zooms_to_where_the_curves_end():
    from hybridsgd.report.build import _zoom

    rise = np.linspace(0, 1, 50)
    curves = {  # both rise from 0.1 and end near 0.97: the full range would squeeze them
        "a": [(rise, 0.1 + 0.87 * np.sqrt(rise))],
        "b": [(rise, 0.1 + 0.86 * rise**0.3)],
    }
    low, high = _zoom(curves)
    assert 0.9 < low < 0.96 and 0.97 <= high < 1.0
    apart = {"a": curves["a"], "c": [(rise, 0.1 + 0.5 * rise)]}  # they differ widely: no zoom
    assert _zoom(apart) is None
    assert _zoom({}) is None  # a task without accuracy
