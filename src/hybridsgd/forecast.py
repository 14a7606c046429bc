"""Predictions for a config: what ``hybridsgd predict`` and ``recommend`` compute, usable
from Python. The analytical models themselves are in :mod:`hybridsgd.analysis`; this module
turns a validated :class:`~hybridsgd.config.Config` into their inputs, and checks a
prediction against the simulator."""

from __future__ import annotations

from typing import Any

from hybridsgd.analysis import Prediction, largest_eigenvalue, measure, predict
from hybridsgd.analysis.jobs import job_model
from hybridsgd.analysis.predict import PREDICT_KEYS
from hybridsgd.backends.sim import simulate_schedule
from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.policies import REGISTRY, PolicyConfig, build_policy, parse_threshold
from hybridsgd.policies.registry import SYNC
from hybridsgd.runner import build_cluster
from hybridsgd.tasks import build_task
from hybridsgd.timing.models import Link, parse_model


def task_config(spec: str) -> Any:
    """The ``[task]`` a command-line task names: a built-in task, a user's
    ``FILE.py:build``, or a TOML config file (its ``[task]``, with its options)."""
    if spec.endswith(".toml"):
        return Config.load(spec).task
    return Config.from_dict({"task": {"name": spec}}).task


def curvature_of(spec: str, seed: int = 0) -> float:
    """A largest Hessian eigenvalue: ``spec`` as a number, or the name of a built-in task
    whose curvature at its initial point is estimated (power iteration)."""
    try:
        h = float(spec)
    except ValueError:
        h = largest_eigenvalue(build_task(task_config(spec), seed=seed))
    if not h > 0:
        raise ConfigError("--curvature", f"must be > 0 (got {h})")
    return h


def on_link(comm: str, field: str = "timing.comm") -> bool:
    """Whether a communication model is a ``link:``, whose time depends on the bytes."""
    return isinstance(parse_model(comm, field, allow_link=True), Link)


def message_bytes_of(cfg: Config, params: int | str | None = None) -> float | None:
    """The mean of a job's two messages in bytes (the float32 parameters down, the gradient
    or pseudo-gradient up, quantized as ``worker.quantize`` says): of a model of ``params``
    parameters (one tensor), of the task ``params`` names, or, with None, of ``cfg``'s own
    task when ``timing.comm`` is a link (whose time depends on it); None otherwise."""
    from hybridsgd.backends.inner import message_bytes

    if params is None and not on_link(cfg.timing.comm):
        return None
    if isinstance(params, int) or (isinstance(params, str) and params.isdigit()):
        n = int(params)
        if n < 1:
            raise ConfigError("--params", f"must be >= 1 (got {n})")
        return message_bytes(n, [(n,)], cfg.worker.quantize)
    task = build_task(task_config(params) if params else cfg.task, seed=cfg.run.seed)
    return message_bytes(task.numel, task.shapes, cfg.worker.quantize)


def hybrid_inputs(p: PolicyConfig, batch_size: int, train_samples: int | None) -> tuple[Any, float]:
    """A policy predicted regime by regime (the hybrid): its threshold and gradients per
    epoch; ``None, 1.0`` for other policies."""
    if REGISTRY[p.name].model != "per-regime":
        return None, 1.0
    if p.reading != "quorum":
        raise ConfigError(
            "policy.reading", "predictions cover the quorum reading only; simulate the partition"
        )
    gpe = 1.0
    if p.progress == "epochs":
        if not train_samples or train_samples < 1:
            raise ConfigError(
                "--train-samples", "hybrid over epochs needs the training set size, e.g. 1797"
            )
        gpe = train_samples / batch_size
    return parse_threshold(p.threshold), gpe


def predict_config(
    cfg: Config,
    *,
    updates: int = 20_000,
    lr: float | None = None,
    curvature: float | None = None,
    train_samples: int | None = None,
    params: int | str | None = None,
) -> Prediction:
    """The prediction for ``cfg``'s policy, timing and batch size (docs/analysis.md). With
    local steps (``[worker]``), a job is ``worker.steps`` minibatches: its compute time the
    sum of as many draws (:func:`~hybridsgd.analysis.jobs.job_model`); its time, throughput
    and staleness are predicted, its stability is not. The messages carry the model of
    ``params`` (a parameter count or a task name; by default the config's task, counted
    when ``timing.comm`` is a link): a link's time is then its latency plus their bytes
    over its bandwidth, and ``bytes_per_sample`` says what a job sends and receives per
    sample it computes."""
    steps = _steps(cfg)
    if cfg.timing.cores and cfg.timing.cores < cfg.policy.workers:
        raise ConfigError(
            "timing.cores",
            f"the predictions take every worker on a processor of its own, not "
            f"{cfg.policy.workers} sharing {cfg.timing.cores:g}: simulate it (hybridsgd run)",
        )
    if cfg.timing.server:
        raise ConfigError(
            "timing.server",
            "the predictions take the server's work on a gradient as instantaneous: simulate "
            "it (hybridsgd run)",
        )
    if not cfg.worker.plain and (lr is not None or curvature is not None):
        raise ConfigError(
            "--lr",
            "the stability of local steps is not modelled: predict their time without "
            "--lr and --curvature",
        )
    nbytes = message_bytes_of(cfg, params)
    cluster = build_cluster(cfg, nbytes or 0)
    compute, how = job_model(cluster.compute, steps, cfg.run.seed)
    p = cfg.policy
    speeds = None if cluster.speeds is None or (cluster.speeds == 1).all() else cluster.speeds
    batch = cfg.task.batch_size * steps  # the samples of one job
    threshold, gpe = hybrid_inputs(p, batch, train_samples)
    entry = REGISTRY[p.name]
    # the policy's own keys that predict() takes by name (PREDICT_KEYS); a synchronous
    # policy's quorum from its registry entry
    own = {key: getattr(p, key) for key in entry.keys if key in PREDICT_KEYS}
    if "stops" in own:
        own["stops"] = bool(own["stops"])
    pred = predict(
        p.name,
        p.workers,
        compute,
        cluster.comm,
        speeds=speeds,
        batch_size=batch,
        threshold=threshold,
        updates=updates,
        gradients_per_epoch=gpe,
        lr=lr,
        curvature=curvature,
        seed=cfg.run.seed,
        quorum=entry.min_gradients(p) if entry.family == SYNC else None,
        **own,
    )
    if nbytes is not None:  # a job's two messages, over the samples it computes
        pred.bytes_per_sample = 2 * nbytes / batch
        if on_link(cfg.timing.comm):
            pred.assumptions.append(
                f"a message is {nbytes:,.0f} bytes (the mean of the pull and the push)"
            )
    if steps > 1:
        pred.assumptions.append(
            f"a job is {steps} minibatches: its compute time the sum of {steps} draws ({how})"
        )
    return pred


def _steps(cfg: Config) -> int:
    """The minibatches of every job (a prediction takes one H for every worker)."""
    if cfg.worker.step_time is not None:
        raise ConfigError(
            "worker.steps",
            f"predictions take a fixed number of steps a job, not {cfg.worker.steps}; "
            "simulate jobs sized by time (hybridsgd run)",
        )
    if not cfg.worker.uniform:
        raise ConfigError(
            "worker.steps",
            "predictions take one number of steps for every worker; simulate the others",
        )
    return cfg.worker.steps_of(0)


def simulated(
    cfg: Config,
    updates: int,
    train_samples: int | None = None,
    params: int | str | None = None,
) -> dict[str, float]:
    """What the prediction is checked against: the same quantities measured on a simulated
    schedule of ``updates`` updates (messages of the model ``params``, as predicted)."""
    batch = cfg.task.batch_size * _steps(cfg)  # the samples of one job
    _, gpe = hybrid_inputs(cfg.policy, batch, train_samples)
    cluster = build_cluster(cfg, message_bytes_of(cfg, params) or 0)
    schedule = simulate_schedule(build_policy(cfg.policy, cfg.run.seed, gpe), cluster, updates)
    return measure(schedule, batch)


def noise_scale_of(spec: str, batch_size: int = 32, seed: int = 0) -> float:
    """A gradient noise scale B_noise in samples: ``spec`` as a number, or the name of a
    built-in task whose noise scale B_noise at its initial point is estimated
    (:func:`hybridsgd.analysis.noise_scale.estimate`, with Hessian-vector products)."""
    from hybridsgd.analysis.noise_scale import estimate

    try:
        value = float(spec)
    except ValueError:
        task = build_task(task_config(spec), seed=seed)
        value = estimate(task, task.initial_params(), batch_size, seed=seed, hessian=True).b_noise
    if not value >= 0:
        raise ConfigError("--noise-scale", f"must be >= 0 samples (got {value})")
    return value


def noise_scale_along_run(
    cfg: Config,
    updates: int,
    points: int,
    minibatches: int = 64,
    progress: Any = None,
    hessian: bool = False,
) -> list[dict[str, Any]]:
    """The simple noise scale of ``cfg``'s task at the start and after ``updates / (points -
    1)``, ... , ``updates`` updates of ``cfg`` itself in the simulator (each point's
    parameters are those of the config run for that many updates). One dict per point:
    ``update``, the test ``loss`` there, and :class:`NoiseScale`'s fields (``b_noise`` too
    with ``hessian``)."""
    from hybridsgd.analysis.noise_scale import estimate
    from hybridsgd.runner import run

    check_along_run(updates, points, minibatches)
    at = sorted({round(updates * i / (points - 1)) for i in range(points)} if points > 1 else {0})
    task = build_task(cfg.task, cfg.run.seed)
    out = []
    for i, u in enumerate(at):
        if progress is not None:
            progress(i, len(at))
        if u == 0:
            params = task.initial_params()
        else:
            d = cfg.to_dict()
            d["run"].update(updates=u, time=None, backend="sim", eval_every=u, checkpoint_every=0)
            d["run"]["log"] = []
            params = run(Config.from_dict(d), progress=False).params
        est = estimate(
            task, params, cfg.task.batch_size, minibatches, seed=cfg.run.seed + i, hessian=hessian
        )
        loss, _ = task.evaluate(params)
        out.append({"update": u, "loss": loss, **est.to_dict()})
    if progress is not None:
        progress(len(at), len(at))
    return out


def check_along_run(updates: int, points: int, minibatches: int) -> None:
    """The arguments of :func:`noise_scale_along_run`, checked (one line each)."""
    if updates < 0:
        raise ConfigError("--updates", f"must be >= 0 (got {updates})")
    if points < 1 or (points > 1 and updates < points - 1):
        raise ConfigError("--points", f"must be 1 to updates + 1 (got {points})")
    if minibatches < 2:
        raise ConfigError("--minibatches", f"must be at least 2 (got {minibatches})")
