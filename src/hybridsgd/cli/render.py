"""Rendering apart from the commands: the tables that a run, a comparison, a prediction
and a validation print."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridsgd.cli.common import _console


def _in_ticks() -> tuple[tuple[str, ...], str]:
    """The policies whose staleness bound counts clock ticks (the registry's
    ``bound_in_ticks``), and how a note names them: "ssp's and psp's"."""
    from hybridsgd.policies import REGISTRY

    names = tuple(n for n, e in REGISTRY.items() if e.bound_in_ticks)
    return names, " and ".join(f"{n}'s" for n in names)


def _print_summary(s: dict, out: Path) -> None:
    import math

    ticks, whose = _in_ticks()
    stale_policy = s["policy"].split(":")[0].split("(")[0] in ticks
    table = Table(
        title=f"{s['policy']} on {s['task']} ({s['backend']}, seed {s['seed']})",
        show_header=False,
    )
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")
    g = s["gradients"]
    acc = s["final_accuracy"]
    rows = [
        ("updates", f"{s['updates']}"),
        ("virtual time" if s.get("clock") == "virtual" else "seconds", f"{s['end_time']:.4g}"),
        ("final loss / accuracy", f"{s['final_loss']:.4f} / {acc:.4f}")
        if acc is not None and not math.isnan(acc)
        else ("final loss", f"{s['final_loss']:.4f}"),
        *((f"final {k}", f"{v:.4g}") for k, v in s.get("final_from_loss", {}).items()),
        (
            "gradients applied / dropped / cancelled / rejected",
            f"{g['applied']} / {g['dropped']} / {g['cancelled']} / {g['rejected']}",
        ),
        ("mean staleness (momentum)", f"{s['mean_staleness']:.2f} ({s['momentum']})"),
    ]
    if s["target_accuracy"] is not None:
        hit = s["time_to_target"]
        rows.append(
            (f"time to {s['target_accuracy']:.0%}", "not reached" if hit is None else f"{hit:.4g}")
        )
    rows.append(("wall time", f"{s['wall_time_s']:.2f} s"))
    for k, v in rows:
        table.add_row(k, v)
    _console().print(table)
    if stale_policy:
        print(f"staleness counts versions; {whose} bound s counts clock ticks between workers")
    print(f"wrote {out}/ (summary.json, gradients.csv, updates.csv, evals.csv, config.toml)")


#: what the comparison table's columns mean (printed under it, and in the README)
COLUMNS = {
    "loss": "final test loss",
    "acc": "final test accuracy",
    "reached": "seeds that reached the target accuracy",
    "time": "mean time to the target over the seeds that reached it",
    "stale": "mean staleness of applied gradients, in versions",
    "idle": "share of worker time spent waiting",
}


def report_table(summary, out: Path) -> tuple[Table, str]:
    """The mean over seeds per policy, with short headers explained in the caption: a
    policy label wraps instead of being cut, and columns a run has no values for (accuracy
    on a task without it, the target columns without a target) are left out."""
    import math

    from hybridsgd.report.build import mean_table

    table = mean_table(summary)
    seeds = summary.groupby("policy", sort=False).seed.count()
    has_acc = bool(table.final_accuracy.notna().any())
    target = summary["target_accuracy"].max() if "target_accuracy" in summary else math.nan
    has_target = not math.isnan(target) or bool((table.reached > 0).any())
    cols = ["loss"] + (["acc"] if has_acc else []) + (["reached", "time"] if has_target else [])
    cols += ["stale", "idle"]
    words = dict(COLUMNS)
    if not math.isnan(target):
        words["reached"] = f"seeds that reached {target:.0%} test accuracy"
    ticks, whose = _in_ticks()
    if ticks and any(str(p).startswith(ticks) for p in table.index):
        words["stale"] += (
            f" ({whose} bound s counts clock ticks between workers, not versions, "
            "so staleness may exceed it)"
        )
    caption = "; ".join(f"{c}: {words[c]}" for c in cols)
    t = Table(title=f"mean over seeds ({out})")
    t.add_column("policy", overflow="fold")
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for name, r in table.iterrows():
        cells = {
            "loss": f"{r.final_loss:.4g}",
            "acc": f"{r.final_accuracy:.3f}",
            "reached": f"{int(r.reached)}/{seeds[name]}",
            "time": "-" if math.isnan(r.time_to_target) else f"{r.time_to_target:.4g}",
            "stale": f"{r.mean_staleness:.2f}",
            "idle": f"{r.idle_fraction:.2f}",
        }
        t.add_row(str(name), *(cells[c] for c in cols))
    return t, caption


def _print_optimal(bound: dict, per_policy: bool = True) -> None:
    console = _console()
    console.print(
        f"  optimal time (Tyurin & Richtarik 2023, up to a constant): {bound['optimal_time']:.4g},"
        f" with the {bound['fastest_workers_used']} fastest workers "
        f"(sigma^2 / epsilon = {bound['sigma2_over_epsilon']:.4g})",
        markup=False, highlight=False,
    )  # fmt: skip
    if not per_policy:
        return
    if "ratio" in bound:
        console.print(
            f"  this policy, same constants: {bound['policy_time']:.4g} = "
            f"{bound['ratio']:.3g}x the optimum",
            markup=False, highlight=False,
        )  # fmt: skip
    else:
        console.print(
            "  this policy applies stale gradients: no iteration count here to compare with",
            markup=False, highlight=False,
        )  # fmt: skip


def _print_validation(table, fit, seeds: int) -> None:
    """The table of ``validate`` (and ``--validate``): simulated against real per policy."""
    import math

    from hybridsgd import profiling

    console = _console()
    if fit is not None:
        for line in profiling.describe(fit):
            console.print(line, markup=False, highlight=False)
    t = Table(
        title=f"simulated (fitted timing) against real, {seeds} seed(s), means; real ± the "
        "seeds' sd"
    )
    for col in ("policy", "updates/s sim", "real", "error", "time to target sim", "real", "error"):
        t.add_column(col, justify="left" if col == "policy" else "right", overflow="fold")
    for r in table.itertuples():
        err = "-" if math.isnan(r.time_to_target_error) else f"{r.time_to_target_error:+.1%}"
        tt_spread = r.time_to_target_real_spread
        t.add_row(r.policy, f"{r.throughput_sim:.4g}",
                  f"{r.throughput_real:.4g} ± {r.throughput_real_spread:.0%}",
                  f"{r.throughput_error:+.1%}", f"{r.time_to_target_sim:.4g}",
                  f"{r.time_to_target_real:.4g}"
                  + ("" if math.isnan(tt_spread) else f" ± {tt_spread:.0%}"), err)  # fmt: skip
    console.print(t)
    console.print(places_line(table), markup=False, highlight=False)


def places_line(table) -> str:
    """How many places a validation's two rankings agree in, and the real runs' ties."""
    line = (
        f"rankings by time to target agree in {table.attrs['places_agree']} of {len(table)} "
        f"places (simulated: {', '.join(table.attrs['ranking_sim'])}; real: "
        f"{', '.join(table.attrs['ranking_real'])})"
    )
    ties = table.attrs.get("real_ties") or []
    if ties:
        pairs = "; ".join(f"{a} and {b}" for a, b in ties)
        line += (
            f"; {table.attrs['places_agree_or_tied']} of {len(table)} counting the places "
            f"where the real runs cannot tell the two apart (paired 95% interval over the "
            f"seeds holds 0: {pairs})"
        )
    return line


def _print_prediction(pred, h, measured) -> None:
    console = Console()
    t = Table(title=f"{pred.policy}, W = {pred.workers}: predicted", show_header=bool(measured))
    cols = ["quantity", "predicted"] + (["simulated", "error"] if measured else [])
    for col in cols:
        t.add_column(col)

    def row(label: str, value: float, key: str | None = None, fmt: str = ".4g") -> None:
        cells = [label, format(value, fmt)]
        if measured and key in measured:
            m = measured[key]
            err = (value - m) / m if m else value - m
            cells += [format(m, fmt), f"{err:+.1%}"]
        elif measured:
            cells += ["", ""]
        t.add_row(*cells)

    q = ", ".join(f"{k} {v:.4g}" for k, v in pred.update_time_quantiles.items())
    row(
        "mean time per update" + (f" ({q})" if q else ""), pred.mean_update_time, "mean_update_time"
    )
    row("gradients per update", pred.quorum)
    row("throughput (samples / unit time)", pred.throughput, "throughput")
    row("wasted fraction of started work", pred.wasted_fraction, "wasted_fraction", ".3f")
    if pred.bytes_per_sample is not None:
        row("bytes sent and received per sample computed", pred.bytes_per_sample)
    sq = ", ".join(f"{k} {v:g}" for k, v in pred.staleness_quantiles.items())
    row(f"mean staleness ({sq})", pred.mean_staleness, "mean_staleness")
    if measured:  # a whole run's mean is low under heavy tails: its slowest are still in flight
        row(
            "  in steady state (reads 5-50% in)",
            pred.mean_staleness,
            "steady_state_staleness",
        )
    console.print(t)
    if pred.regimes:
        r = Table(title="per regime")
        for col in ("regime", "updates", "time per update", "gradients per update", "staleness"):
            r.add_column(col, justify="right")
        for row_ in pred.regimes:
            r.add_row(
                row_["regime"],
                f"{row_['updates']:,}",
                f"{row_['mean_update_time']:.4g}",
                f"{row_['gradients_per_update']:.3g}",
                f"{row_['mean_staleness']:.3g}",
            )
        console.print(r)
    for key, how in pred.method.items():
        console.print(f"  {key}: {how}", markup=False, highlight=False)
    for a in pred.assumptions:
        console.print(f"  assumes: {a}", markup=False, highlight=False)
    st = pred.stability
    if st is not None:
        s = Table(title=f"stability at curvature h = {h:.4g} ({st.model} model)", show_header=False)
        s.add_row("stable", "yes" if st.stable else "NO: diverges")
        s.add_row("convergence rate (per unit time)", f"{st.convergence_rate:.4g}")
        s.add_row("largest stable learning rate", f"{st.max_stable_lr:.4g}")
        if st.best_workers is not None:
            s.add_row("fastest worker count (up to 2W)", str(st.best_workers))
            s.add_row("adding workers slows training from", str(st.workers_stop_helping or "-"))
            s.add_row("diverges from", str(st.workers_unstable or "-"))
        if st.continuous:
            c = st.continuous
            s.add_row(
                "continuous model (Yu, Chen & Poor)",
                f"{'stable' if c['stable'] else 'unstable'}, rate {c['convergence_rate']:.4g}, "
                f"largest stable lr {c['max_stable_lr']:.4g}",
            )
        console.print(s)
