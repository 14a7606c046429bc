"""Workers sharing processors (``timing.cores``, backends/sim/shared.py): against closed
forms and against a processor-sharing reference written here step by step, in float64,
with the policies written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybridsgd.backends.sim import run_events, run_shared, simulate_schedule
from hybridsgd.policies import build_policy
from hybridsgd.record import FATE_CODE
from hybridsgd.timing import Cluster, parse_model


def reference(kind: str, W: int, cores: float, cluster: Cluster, updates: int, backups: int = 0):
    """Processor sharing the slow way: every job's remaining work is kept and all of them
    are advanced at min(1, C / n) between events; messages are not shared. With a server
    model, a pushed gradient waits in line for the server, which works on one at a time
    as one more of the n, and the gradient arrives when it is done. ``kind``: ``async``
    (each arrival restarts its worker) or ``sync`` (a round ends when W - ``backups``
    have arrived; the rest are cancelled, dropped from the line, and everyone restarts).
    Returns each gradient as (worker, start, end, applied), cancelled ones with applied
    False at the round's end."""
    PULL, COMPUTE, PUSH, LINE, DONE = range(5)
    now, out, line, arrived = 0.0, [], [], []
    job = {}  # w -> [start, phase, left (time or work), work, push]
    server = None  # [worker, work left] while the server works

    def start(w, t):
        pull, work, push = cluster.parts(w, t)
        job[w] = [t, PULL, pull, work, push]

    def arrive(w):
        out.append((w, job[w][0], now, True))
        if kind == "async":
            start(w, now)
            return
        job[w][1] = DONE
        arrived.append(w)
        if len(arrived) == W - backups:
            for c in range(W):
                if c not in arrived:
                    out.append((c, job[c][0], now, False))
            line.clear()
            for c in range(W):
                start(c, now)
            arrived.clear()

    for w in range(W):
        start(w, 0.0)
    while sum(o[3] for o in out) < updates * (1 if kind == "async" else W - backups):
        if server is None and line:
            server = [line.pop(0), cluster.server_work()]
        n = sum(1 for j in job.values() if j[1] == COMPUTE) + (server is not None)
        rate = 1.0 if n <= cores else cores / n
        # (time, worker) of the next phase to end; the server as worker W
        ends = [(now + j[2] / (rate if j[1] == COMPUTE else 1.0), w)
                for w, j in job.items() if j[1] <= PUSH]  # fmt: skip
        if server is not None:
            ends.append((now + server[1] / rate, W))
        t, w = min(ends)
        for j in job.values():  # advance everyone to t
            j[2] -= (t - now) * (rate if j[1] == COMPUTE else 1.0) if j[1] <= PUSH else 0.0
        if server is not None:
            server[1] -= (t - now) * rate
        now = t
        if w == W:  # the server is done with a gradient
            done, server = server[0], None
            arrive(done)
            continue
        j = job[w]
        if j[1] == PULL:
            j[1], j[2] = COMPUTE, j[3]
        elif j[1] == COMPUTE:
            j[1], j[2] = PUSH, j[4]
        elif cluster.server is None:
            arrive(w)
        else:
            j[1] = LINE
            line.append(w)
    return out


def gradients(schedule):
    applied = schedule.fate != FATE_CODE["cancelled"]
    rows = zip(schedule.worker, schedule.start, schedule.end, applied, strict=True)
    return [(int(w), float(s), float(e), bool(a)) for w, s, e, a in rows]


def policy_of(spec: str, W: int):
    return build_policy(spec + ("," if ":" in spec else ":") + f"workers={W}")


CONSTANT = parse_model("constant:value=1")


def cluster(cores, seed=5, W=5, server=None):
    return Cluster(
        parse_model("lognormal:mu=0,sigma=0.6"),
        W,
        seed=seed,
        comm=parse_model("exp:mu=0.05"),
        speeds=[1, 1, 1.5, 2, 4][:W],
        cores=cores,
        server=None if server is None else parse_model(server),
    )


@pytest.mark.parametrize(
    "cores, server",
    [(1.0, None), (1.5, None), (3.0, None), (2.0, "exp:mu=1"), (None, "constant:value=0.3")],
)
@pytest.mark.parametrize(
    "kind, policy, backups",
    [("async", "async", 0), ("sync", "sync", 0), ("sync", "backup:backups=2", 2)],
)
def test_every_gradient_arrives_when_the_step_by_step_reference_says(
    kind, policy, backups, cores, server
):
    got = gradients(run_shared(policy_of(policy, 5), cluster(cores, server=server), 40, None))
    C = math.inf if cores is None else cores
    want = reference(kind, 5, C, cluster(cores, server=server), 40, backups)
    key = lambda g: (round(g[2], 9), g[0])  # noqa: E731 (arrival order)
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert [(g[0], g[3]) for g in got] == [(g[0], g[3]) for g in want]
    np.testing.assert_allclose([g[1:3] for g in got], [g[1:3] for g in want], rtol=0, atol=1e-9)


def test_two_jobs_on_one_core_end_at_the_sum_of_their_work():
    # works 1 and 3 at a rate of 1/2 each: the short one ends at 2, the long one has 2 left
    # and the core to itself: it ends at 1 + 3 = 4 (a plain cluster: at 3)
    c = Cluster(CONSTANT, 2, speeds=[1, 3], cores=1)
    s = simulate_schedule(policy_of("sync", 2), c, max_updates=3)
    assert s.update_time.tolist() == [4.0, 8.0, 12.0]
    assert s.end[:2].tolist() == [2.0, 4.0]


def test_a_busy_server_bounds_the_throughput():
    # async, 8 workers of work 1 each on processors of their own, a server that works 0.25
    # on each gradient: the workers could send 8 / 1.25 = 6.4 a unit, the server takes 4
    c = Cluster(CONSTANT, 8, server=parse_model("constant:value=0.25"))
    s = simulate_schedule(policy_of("async", 8), c, 4000)
    assert s.n_updates / s.update_time[-1] == pytest.approx(4.0, rel=1e-3)
    # with 2 workers it is the workers: 2 / 1.25 = 1.6 a unit
    c = Cluster(CONSTANT, 2, server=parse_model("constant:value=0.25"))
    s = simulate_schedule(policy_of("async", 2), c, 4000)
    assert s.n_updates / s.update_time[-1] == pytest.approx(1.6, rel=1e-3)


def test_a_crash_frees_its_core():
    # two jobs of work 1 on one core; worker 1 dies at 0.5, when each has done 0.25: worker
    # 0's 0.75 left then take 0.75 alone, so its gradient is in at 1.25
    c = Cluster(CONSTANT, 2, cores=1)
    s = run_shared(policy_of("async", 2), c, 2, None, crashes=[(0.5, 1)])
    assert s.lost == [(0.5, 1)]
    mine = s.end[(s.worker == 0) & (s.fate == FATE_CODE["applied"])]
    assert mine.tolist() == pytest.approx([1.25, 2.25], abs=1e-12)


def test_time_budgets_overrun_on_the_shared_clock():
    # MindFlayer, budget 1.5 each: two jobs of work 1 on one core take 2 each, so both are
    # abandoned at 1.5 and again at 3; on two cores each takes 1 and an update fires at 1, 2
    mindflayer = "mindflayer:batch=2,budgets=1.5"
    one = run_shared(policy_of(mindflayer, 2), Cluster(CONSTANT, 2, cores=1), None, 3.1)
    assert one.n_updates == 0
    assert one.end[one.overran].tolist() == [1.5, 1.5, 3.0, 3.0]
    two = run_shared(policy_of(mindflayer, 2), Cluster(CONSTANT, 2, cores=2), None, 3.1)
    assert two.overran is None and two.update_time.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("spec", ["sync", "backup:backups=1", "async", "ssp:staleness_bound=1"])
def test_enough_cores_is_the_plain_event_loop(spec):
    shared = run_shared(policy_of(spec, 4), cluster(4.0, W=4), 100, None)
    plain = run_events(policy_of(spec, 4), cluster(None, W=4), 100, None)
    assert (shared.worker == plain.worker).all() and (shared.fate == plain.fate).all()
    np.testing.assert_allclose(shared.end, plain.end, rtol=1e-12)
    # the simulator takes the plain loop (or its fast path) itself then, bit for bit
    a = simulate_schedule(policy_of(spec, 4), cluster(4.0, W=4), 50)
    b = simulate_schedule(policy_of(spec, 4), cluster(None, W=4), 50)
    assert a.path == b.path and a.end.tolist() == b.end.tolist()


def test_sharing_slows_waiting_policies_less_than_independent_draws_of_the_shared_time():
    # the fidelity page's reason: under async every job is slowed W / C times; sync's last
    # workers of a round speed up once the others are done, so its round is shorter than
    # the maximum of W draws of the async job time
    W, C = 4, 2.0
    model = parse_model("lognormal:mu=0,sigma=0.3")
    sync, asynchronous = policy_of("sync", W), policy_of("async", W)
    shared = simulate_schedule(sync, Cluster(model, W, seed=1, cores=C), 400)
    slowed = parse_model(f"lognormal:mu={math.log(W / C)},sigma=0.3")
    independent = simulate_schedule(policy_of("sync", W), Cluster(slowed, W, seed=1), 400)
    a_shared = simulate_schedule(asynchronous, Cluster(model, W, seed=1, cores=C), 2000)
    a_indep = simulate_schedule(policy_of("async", W), Cluster(slowed, W, seed=1), 2000)
    assert shared.update_time[-1] < 0.85 * independent.update_time[-1]
    assert a_shared.update_time[-1] == pytest.approx(a_indep.update_time[-1], rel=0.05)
