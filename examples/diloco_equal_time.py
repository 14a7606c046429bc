"""DiLoCo's claim at this machine's scale (issue 36, docs/reproductions.md section 11):
does synchronizing every H local steps lose nothing against synchronizing every step, and
what does it buy on a slow link, at equal wall-clock time?

Eight forms, each tuned on its own: plain sync and async data parallelism (the server's
AdamW, H = 1), and sync and async with H in {4, 16, 64} local AdamW steps a job, whose
outer optimizer is tuned too among DiLoCo's (the server's SGD with Nesterov momentum 0.9
at lr 0.7; asynchronous local SGD: delayed Nesterov, momentum once every W updates) and
plain SGD at lr 0.7 or 1 (lr 1: parameter averaging). W = 4 workers,
lognormal(0, 0.5) minibatch times (median 1), two links: a fast one whose message costs a
tenth of a minibatch and a slow one whose message costs 10 minibatches (latency 0.01 plus
the model's float32 bytes over the bandwidth). Every run gets the same virtual time. Each
form's lr (server AdamW's for H = 1, inner AdamW's and the outer optimizer otherwise) is
chosen on the final validation loss of a 10% split of the training set, then rerun on
fresh seeds and scored by its final test loss.

    python examples/diloco_equal_time.py --out runs/diloco               # 18 min on 2 cores
    python examples/diloco_equal_time.py --quick --out /tmp/diloco-quick  # 10 s smoke run

Writes ``results.json``, ``results.md`` and ``equal_time.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import hybridsgd as h
from hybridsgd.tasks.registry import build_task

W = 4
STEPS = (1, 4, 16, 64)
LRS = (1e-3, 3e-3, 1e-2)
#: the outer optimizers a local-step form is tuned over: DiLoCo's (momentum 0.9: Nesterov,
#: delayed Nesterov when asynchronous), and plain SGD at lr 0.7 and 1
OUTERS = ("diloco", "sgd-0.7", "sgd-1")
#: a tiny byte-level transformer (1 layer, d_model 32, context 64) and the digits MLP
TASKS = {
    "lm": {"name": "lm", "layers": 1, "d_model": 32, "heads": 2, "context": 64,
           "batch_size": 8, "test_samples": 256},
    "mlp-digits": {"name": "mlp-digits", "batch_size": 16},
}  # fmt: skip
#: a message's cost in mean minibatch times (lognormal(0, 0.5): mean e^0.125 = 1.133)
LINKS = {"fast": 0.1, "slow": 10.0}
MEAN_STEP = math.exp(0.125)


def config(task: dict, link: float, policy: str, steps: int, lr: float, outer: str,
           seed: int, budget: float, validation: float = 0.0) -> h.Config:  # fmt: skip
    numel = build_task(h.Config.from_dict({"task": task}).task, 0).numel
    bandwidth = 4 * numel / (link * MEAN_STEP - 0.01)  # latency 0.01 + bytes / bandwidth
    d: dict = {
        "task": {**task, "validation": validation},
        "policy": {"name": policy, "workers": W},
        "timing": {"compute": "lognormal:mu=0,sigma=0.5",
                   "comm": f"link:latency=0.01,bandwidth={bandwidth:.6g}"},
        "run": {"time": budget, "eval_every": 100_000, "seed": seed, "threads": 1},
    }  # fmt: skip
    if steps == 1:
        d["optimizer"] = {"name": "adamw", "lr": lr}
    else:
        d["worker"] = {"steps": steps, "optimizer": "adamw", "lr": lr}
        if outer != "diloco":
            d["optimizer"] = {"name": "sgd", "lr": float(outer.split("-")[1])}
        elif policy == "sync":
            d["optimizer"] = {"name": "sgd", "lr": 0.7, "momentum": 0.9,
                              "options": {"nesterov": True}}  # fmt: skip
        else:
            d["optimizer"] = {"name": "delayed_nesterov", "lr": 0.7, "momentum": 0.9,
                              "options": {"period": W}}  # fmt: skip
    return h.Config.from_dict(d)


def final_loss(args: tuple) -> float:
    r = h.run(config(*args), progress=False)
    loss = r.summary["final_loss"]
    return loss if loss is not None and math.isfinite(loss) else math.inf


def measure(tasks, links, steps, lrs, seeds: int, budget: float, jobs: int) -> dict:
    forms = [(p, s) for s in steps for p in ("sync", "async")]
    rows = []
    with ProcessPoolExecutor(jobs) as pool:
        for task in tasks:
            for link in links:
                grid = [(TASKS[task], LINKS[link], p, s, lr, o, 100, budget, 0.1)
                        for p, s in forms for lr in lrs
                        for o in (OUTERS if s > 1 else ("-",))]  # fmt: skip
                tuned = list(pool.map(final_loss, grid))
                chosen: dict = {}
                for (_, _, p, s, lr, o, *_), loss in zip(grid, tuned, strict=True):
                    if loss < chosen.get((p, s), (math.inf,))[0]:
                        chosen[(p, s)] = (loss, lr, o)
                pick = {f: chosen.get(f, (0, lrs[0], OUTERS[0]))[1:] for f in forms}
                finals = [(TASKS[task], LINKS[link], p, s, *pick[(p, s)], seed, budget)
                          for p, s in forms for seed in range(seeds)]  # fmt: skip
                scores = list(pool.map(final_loss, finals))
                for i, (p, s) in enumerate(forms):
                    got = scores[i * seeds : (i + 1) * seeds]
                    lr, o = pick[(p, s)]
                    rows.append({"task": task, "link": link, "policy": p, "steps": s,
                                 "lr": lr, "outer": o, "test_loss": got})  # fmt: skip
                    print(
                        f"{task} {link} {p:5s} H={s:<3d} lr={lr} outer={o} "
                        f"test loss {np.mean(got):.4f} ± {np.std(got, ddof=1):.4f}"
                    )
    return {"workers": W, "budget": budget, "seeds": seeds, "lrs": list(lrs),
            "outers": list(OUTERS), "links": {k: LINKS[k] for k in links},
            "rows": rows}  # fmt: skip


def table(results: dict) -> str:
    lines = []
    for task in dict.fromkeys(r["task"] for r in results["rows"]):
        for link in results["links"]:
            lines += [f"\n**{task}, {link} link** (a message: {results['links'][link]:g} "
                      "minibatch times)\n", "| form | H | lr | outer | final test loss |",
                      "|---|---|---|---|---|"]  # fmt: skip
            for r in results["rows"]:
                if r["task"] == task and r["link"] == link:
                    v = np.asarray(r["test_loss"])
                    sd = v.std(ddof=1) if len(v) > 1 else 0.0
                    lines.append(f"| {r['policy']} | {r['steps']} | {r['lr']:g} | "
                                 f"{r['outer']} | {v.mean():.4f} ± {sd:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in results["rows"]))
    links = list(results["links"])
    n = len(tasks) * len(links)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, (task, link) in zip(axes[0], [(t, k) for t in tasks for k in links], strict=True):
        for policy, colour in (("sync", "tab:blue"), ("async", "tab:orange")):
            rs = [r for r in results["rows"]
                  if r["task"] == task and r["link"] == link and r["policy"] == policy]  # fmt: skip
            hs = [r["steps"] for r in rs]
            mean = [np.mean(r["test_loss"]) for r in rs]
            err = [np.std(r["test_loss"], ddof=1) if len(r["test_loss"]) > 1 else 0 for r in rs]
            ax.errorbar(hs, mean, yerr=err, marker="o", capsize=3, color=colour, label=policy)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(STEPS), [str(s) for s in STEPS])
        ax.set_xlabel("local steps H (1: plain data parallel)")
        ax.set_title(f"{task}, {link} link", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final test loss at equal time (lower is better)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/diloco")
    ap.add_argument("--budget", type=float, default=400.0, help="virtual time of every run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a smoke run: mlp-digits, 2 forms")
    args = ap.parse_args()
    if args.quick:
        results = measure(["mlp-digits"], ["slow"], (1, 4), LRS[:2], 2, 60.0, args.jobs)
    else:
        results = measure(list(TASKS), list(LINKS), STEPS, LRS, args.seeds, args.budget,
                          args.jobs)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(table(results))
    plot(results, out / "equal_time.png")
    print(table(results))
    print(f"wrote {out}/results.json, results.md, equal_time.png")


if __name__ == "__main__":
    main()
