"""A run, fully described: one validated config, from a TOML file or from Python.

>>> cfg = Config.from_dict({"policy": {"name": "backup", "workers": 8, "backups": 2}})
>>> cfg.policy.name, cfg.policy.workers - cfg.policy.backups
('backup', 6)

Every bad value raises :class:`~hybridsgd.errors.ConfigError` naming the field and what is
allowed; the CLI turns it into one line and exit status 2.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hybridsgd.errors import ConfigError, suggest
from hybridsgd.policies.registry import PolicyConfig
from hybridsgd.policies.registry import section as policy_section
from hybridsgd.sections import (
    MOVED_RUN_KEYS,
    RAY_TRANSPORTS,
    FaultsConfig,
    LocalConfig,
    OptimizerConfig,
    RayConfig,
    RunConfig,
    TaskConfig,
    TimingConfig,
    WorkerConfig,
    _choice,
    grid_rules,
)
from hybridsgd.values import coerce as _coerce
from hybridsgd.values import parse_value as _parse_value

__all__ = [
    "RAY_TRANSPORTS",
    "SECTIONS",
    "Config",
    "FaultsConfig",
    "LocalConfig",
    "OptimizerConfig",
    "PolicyConfig",
    "RayConfig",
    "RunConfig",
    "TaskConfig",
    "TimingConfig",
    "WorkerConfig",
    "grid_rules",
]


SECTIONS: dict[str, type] = {
    "task": TaskConfig,
    "policy": PolicyConfig,
    "optimizer": OptimizerConfig,
    "worker": WorkerConfig,
    "timing": TimingConfig,
    "faults": FaultsConfig,
    "run": RunConfig,
}


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    #: the old names of [run] keys that moved to a backend's table, as this config gave them
    moved: ClassVar[tuple[str, ...]] = ()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: Sequence[str] = ()) -> Config:
        """Validate a nested dict (as read from TOML) with ``section.key=value`` overrides."""
        data = {k: copy.deepcopy(v) if isinstance(v, dict) else v for k, v in data.items()}
        moved = _move_run_keys(data.get("run"))
        for item in overrides:
            _apply_override(data, item, moved)
        sections = {}
        for name, value in data.items():
            if name not in SECTIONS:
                raise ConfigError(
                    name,
                    f"unknown section{suggest(name, SECTIONS)}; use one of: {', '.join(SECTIONS)}",
                )
            if not isinstance(value, dict):
                raise ConfigError(name, "must be a table ([section] in TOML)")
            sections[name] = _build_section(name, SECTIONS[name], value)
        cfg = cls(**sections)
        cfg.validate()
        setattr(cfg, "moved", tuple(dict.fromkeys(moved)))  # noqa: B010 (an instance value of a ClassVar)
        return cfg

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> Config:
        """Read and validate a TOML config file."""
        p = Path(path)
        if p.is_dir():
            raise ConfigError("config", f"{p} is a directory; give a TOML config file")
        if not p.is_file():
            raise ConfigError("config", f"no such file: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            hint = ""
            if p.suffix == ".py":
                hint = (
                    "; a model of your own goes in a TOML config as "
                    f'task.name = "{p.name}:build" (docs/tasks.md, "Your own model")'
                )
            raise ConfigError("config", f"{p} is not valid TOML: {exc}{hint}") from None
        task = data.get("task")
        if isinstance(task, dict) and isinstance(task.get("name"), str):
            from hybridsgd.tasks.user import absolute

            # a user's file named in a config file is relative to that file
            task["name"] = absolute(task["name"], p.resolve().parent)
        return cls.from_dict(data, overrides)

    def sections(self) -> list[tuple[str, Any]]:
        """``(name, section)`` for each section, in order."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]

    def to_dict(self) -> dict[str, Any]:
        """Every section as a plain table. ``[policy]`` and ``[task]`` hold their shared keys
        and the chosen policy's or task's own, ``[run]`` the table of its backend (see each
        section's ``flat``)."""
        out = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "flat"):
                table = section.flat()
                if table is not None:  # [worker] is not written while jobs are plain
                    out[f.name] = copy.deepcopy(table)
            else:
                out[f.name] = dataclasses.asdict(section)
        return out

    def replace(self, *overrides: str) -> Config:
        """A copy with ``section.key=value`` overrides applied (and validated)."""
        return Config.from_dict(self.to_dict(), list(overrides))

    # -- checks across fields ---------------------------------------------------------------
    def validate(self) -> None:
        """Every section's keys (each section checks its own, in this order), then what
        holds across sections: faults against the workers, lr schedules against the run."""
        from hybridsgd.policies import validate as validate_policy

        self.task.validate()
        validate_policy(self.policy)
        self.optimizer.validate()
        self.worker.validate()
        self._validate_faults()
        self.timing.validate(self.policy.workers)
        self._validate_cores()
        self._validate_local_steps()
        self.run.validate(self.policy)
        self._validate_hyper()

    def _validate_cores(self) -> None:
        """``timing.cores`` and ``timing.server`` are the simulator's model of shared
        processors and of the server's own work."""
        for key, what, off in (
            ("cores", "processors the simulator's workers share", "0"),
            ("server", "the simulator's server working on each gradient", '""'),
        ):
            if not getattr(self.timing, key):
                continue
            if self.run.backend != "sim" and self.run.time_unit > 0:
                raise ConfigError(
                    f"timing.{key}",
                    f"models {what}; the {self.run.backend} backend's are real: leave it "
                    f"out ({off})",
                )
            if self.worker.step_time is not None:
                raise ConfigError(
                    f"timing.{key}",
                    f'jobs sized by time (worker.steps = "time:T") do not run with it: leave '
                    f"it out ({off}) or give worker.steps as a count",
                )

    def _validate_local_steps(self) -> None:
        """What local steps (a [worker] other than one plain gradient) do not run with yet."""
        if self.worker.plain:
            return
        steps, W = self.worker.steps, self.policy.workers
        if isinstance(steps, list) and len(steps) != W:
            raise ConfigError(
                "worker.steps", f"gives {len(steps)} values for {W} workers: give one per worker"
            )
        if self.run.backend != "sim" and self.run.device not in ("cpu", ""):
            raise ConfigError(
                "run.device",
                f"local steps on the {self.run.backend} backend compute on the CPU so far",
            )
        if getattr(self.policy, "reading", "quorum") == "partition":
            raise ConfigError(
                "policy.reading", "local steps send whole pseudo-gradients: use the quorum reading"
            )
        from hybridsgd.policies.registry import REGISTRY

        if REGISTRY[self.policy.name].update_rule == "delay-compensation":
            raise ConfigError(
                "worker.steps",
                f"{self.policy.name} corrects a gradient for its delay with the gradient's own "
                "square, which a pseudo-gradient of local steps is not: use worker.steps = 1",
            )

    def run_length(self, unit: str) -> float | None:
        """How long the run is in a schedule's unit, when the config says (updates or time)."""
        return {"updates": self.run.updates, "time": self.run.time, "samples": None}[unit]

    def _validate_hyper(self) -> None:
        from hybridsgd.core.hyper import SCALES, UNITS, parse_schedule
        from hybridsgd.core.server import optimizer_parameters

        o = self.optimizer
        _choice("optimizer.schedule_unit", o.schedule_unit, UNITS)
        _choice("optimizer.scale_lr", o.scale_lr, SCALES)
        schedule = parse_schedule(o.schedule, self.run_length(o.schedule_unit))
        if o.async_momentum is not None and "momentum" not in optimizer_parameters(o.name):
            raise ConfigError(
                "optimizer.async_momentum", f"{o.name} has no momentum; leave it unset"
            )
        varies = (
            not schedule.constant or o.scale_lr != "none" or o.async_lr is not None
            or o.async_momentum is not None
        )  # fmt: skip
        if varies and self.run.ray.shards > 1:
            raise ConfigError(
                "run.ray.shards",
                "per-update lr and momentum (schedule, scale_lr, async_lr, async_momentum) "
                "run with one parameter server: set run.ray.shards = 1",
            )

    def _validate_faults(self) -> None:
        from hybridsgd.core.faults import parse_attack

        f, W = self.faults, self.policy.workers
        if not 0 <= f.byzantine < 1:
            raise ConfigError(
                "faults.byzantine", f"must be a fraction in [0, 1) (got {f.byzantine})"
            )
        for key in ("byzantine_workers", "nan_workers"):
            bad = [w for w in getattr(f, key) if not (isinstance(w, int) and 0 <= w < W)]
            if bad:
                raise ConfigError(f"faults.{key}", f"workers are numbered 0..{W - 1} (got {bad})")
        parse_attack(f.attack)
        if not (f.crash_rate >= 0 and math.isfinite(f.crash_rate)):
            raise ConfigError("faults.crash_rate", f"must be >= 0 (got {f.crash_rate})")
        for c in f.crashes:
            if (
                not isinstance(c, dict)
                or set(c) != {"worker", "time"}
                or not isinstance(c["worker"], int)
                or not 0 <= c["worker"] < W
                or not isinstance(c["time"], int | float)
                or not c["time"] >= 0
            ):
                raise ConfigError(
                    "faults.crashes",
                    f"write [{{worker = 0..{W - 1}, time = T >= 0}}, ...] (got {c!r})",
                )


# -- helpers ---------------------------------------------------------------------------------


def _apply_override(data: dict[str, Any], item: str, moved: list[str]) -> None:
    """``section.key=value`` (or ``section.table.key=value``) into ``data``; an old name of a
    moved [run] key sets the new one (and is noted in ``moved``)."""
    key, sep, raw = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise ConfigError(
            "--set", f"expected section.key=value, got {item!r} (e.g. policy.name=sync)"
        )
    if section not in SECTIONS:
        raise ConfigError(
            section,
            f"unknown section in --set{suggest(section, SECTIONS)}; "
            f"use one of: {', '.join(SECTIONS)}",
        )
    path = name.split(".")
    if section == "run" and name in MOVED_RUN_KEYS:
        moved.append(name)
        path = list(MOVED_RUN_KEYS[name])
    table = data.setdefault(section, {})
    for i, part in enumerate(path[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{section}.{'.'.join(path[: i + 1])}", "is not a table")
    table[path[-1]] = _parse_value(raw.strip())


def _move_run_keys(run: Any) -> list[str]:
    """The old names of moved keys in a ``[run]`` table, each moved to its backend's table
    (both names given is refused: which one is meant?)."""
    if not isinstance(run, dict):
        return []
    moved = []
    for old, (table, new) in MOVED_RUN_KEYS.items():
        if old in run and isinstance(run.setdefault(table, {}), dict):
            if new in run[table]:
                raise ConfigError(
                    f"run.{old}",
                    f"is the old name of run.{table}.{new}, which is set too; keep one",
                )
            run[table][new] = run.pop(old)
            moved.append(old)
    return moved


def _build_section(section: str, cls: type, values: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    if cls is PolicyConfig:  # the shared keys and the registered policies' own
        return policy_section(values)
    options: dict[str, Any] = {}
    if cls is TaskConfig and isinstance(values.get("name"), str):
        from hybridsgd.tasks.user import absolute, is_user_spec

        values = {**values, "name": absolute(values["name"])}
        if is_user_spec(values["name"]):  # the keys hybridsgd does not know are the user's
            options = dict(values.get("options") or {})
            options |= {k: v for k, v in values.items() if k not in known}
            values = {k: v for k, v in values.items() if k in known and k != "options"}
    for key, value in values.items():
        name = f"{section}.{key}"
        if key not in known:
            raise ConfigError(name, f"unknown key{_where(section, cls, key, known)}")
        table = hints[key]
        if isinstance(table, type) and dataclasses.is_dataclass(table):  # [run.ray] ...
            if not isinstance(value, dict):
                raise ConfigError(name, f"must be a table ([{name}] in TOML)")
            kwargs[key] = _build_section(name, table, value)
        else:
            kwargs[key] = _coerce(name, value, hints[key])
    if options:
        kwargs["options"] = options
    return cls(**kwargs)


def _where(section: str, cls: type, key: str, known: set[str]) -> str:
    """Where an unknown key of a section may belong: the table of the section that has it,
    or else the closest known names and the keys there are."""
    hints = typing.get_type_hints(cls)
    for name in sorted(known):
        table = hints[name]
        is_table = isinstance(table, type) and dataclasses.is_dataclass(table)
        if is_table and key in {f.name for f in dataclasses.fields(table)}:
            return f"; it belongs to [{section}.{name}] (write {section}.{name}.{key})"
    return f"{suggest(key, known)}; {section} takes: {', '.join(sorted(known))}"
