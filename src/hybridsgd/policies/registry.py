"""The policy registry: every named policy declares itself once, in its own module.

A :class:`Registered` entry holds what the rest of hybridsgd needs to know of a policy:

* its own ``[policy]`` keys, as a frozen dataclass whose fields give each key's type,
  default, help, bound check and an example (:func:`param`);
* the keys it cannot do without, and short aliases for command lines (``backup:b=2``);
* how to build it from a validated ``[policy]`` section;
* the fewest gradients one of its updates may combine, for robust aggregators;
* what ``predict`` knows of it: its ``predictor`` (the model docs/analysis.md derives for
  it), and its ``family``, ``"sync"`` or ``"async"``, for what holds across a family;
* its colour in plots, whether its bound counts clock ticks, what runs only on the
  simulator, and what a tuning by studies searches besides the lr;
* example specs, which the conformance tests and the docs run.

Config validation, ``parse_spec``, the CLI's help, ``recommend``'s candidates and the
conformance tables all read this registry. Adding a policy means one module that calls
:func:`register`, plus its tests. ``tests/policies/test_registry.py`` registers a new
policy in a few lines and runs it in config, the CLI, the simulator and the local backend.

The shared keys of every policy are :class:`PolicyConfig`'s fields: ``name``, ``workers``,
``aggregator``, ``staleness``, ``max_staleness``, ``on_worker_loss``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hybridsgd.errors import ConfigError

if TYPE_CHECKING:
    from hybridsgd.policies.base import Policy

Check = Callable[[Any, "PolicyConfig"], None]


def param(default: Any, help: str, *, check: Check | None = None, example: str = "") -> Any:
    """A policy's own ``[policy]`` key, as a field of its parameter dataclass: ``check(value,
    policy_config)`` raises :class:`ConfigError` for a value out of bounds; ``example`` is
    shown when a required key is missing (``policy.k is required by k_sync (e.g. ...)``)."""
    return field(default=default, metadata={"help": help, "check": check, "example": example})


@dataclass(frozen=True)
class Context:
    """What building a policy may need beyond its ``[policy]`` section."""

    seed: int = 0  # the run seed (psp samples its peers from it)
    gradients_per_epoch: float = 1.0  # hybrid over epochs
    tensors: int = 1  # the model's parameter tensors (hybrid's partition reading)


@dataclass(frozen=True)
class Registered:
    """One named policy (see the module doc)."""

    name: str
    summary: str  # one line, for help and docs
    build: Callable[[PolicyConfig, Context], Policy]
    params: type | None = None  # a frozen dataclass of the policy's own keys
    required: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    min_gradients: Callable[[PolicyConfig], int] = lambda c: 1
    # "sync": predicted as the first K = min_gradients(config) gradients of each version from
    # distinct workers (k_sync's order statistics); "async": the renewal model; None: none
    family: str | None = None
    #: how ``predict`` models it: one of hybridsgd.analysis.predict.PREDICTORS
    #: ("first-k-distinct", "every-arrival", "per-regime", ...), or "" for no model
    predictor: str = ""
    examples: tuple[str, ...] = ()  # specs, e.g. "backup:backups=1", run by the tests
    stale: bool = False  # applies stale gradients: policy.staleness and max_staleness apply
    #: recommend: the settings of its own keys worth comparing at W workers (None: not one
    #: of recommend's candidates)
    candidates: Callable[[int], list[dict[str, Any]]] | None = None
    #: its colour in every plot and report (a policy of your own without one gets a spare)
    colour: str = ""
    #: its staleness bound counts clock ticks between workers, not versions (ssp, psp): a
    #: report says so next to its staleness
    bound_in_ticks: bool = False
    #: whether this configuration of it runs only on the simulator, without checkpoints:
    #: ``(key, value, what to use elsewhere)`` (a hybrid's partition reading), or None
    sim_only: Callable[[PolicyConfig], tuple[str, str, str] | None] = lambda c: None
    #: keys a tuning by studies searches besides the lr (and SGD's momentum), log-uniformly
    #: over the lr's range: a hybrid's asynchronous lr
    tuned_keys: tuple[str, ...] = ()
    #: the kind of gradient table its policy keeps at the server (its ``Policy.table``:
    #: hybridsgd.core.tables), or None; a table takes the place of the aggregator
    table: str | None = None
    #: a rule of its own over each update's gradient (``"rescaled"``: a factor per update),
    #: which a grid of lrs sharing one replay does not apply: such a policy runs alone
    update_rule: str = ""

    @property
    def model(self) -> str:
        """``predict``'s model of it: its own predictor, else its family's (the first K
        gradients from distinct workers for ``sync``, every arrival for ``async``)."""
        return self.predictor or FAMILY_MODELS.get(self.family or "", "")

    @property
    def keys(self) -> tuple[str, ...]:
        """The policy's own ``[policy]`` keys, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(self.params)) if self.params else ()

    @property
    def reads(self) -> tuple[str, ...]:
        """Every key it reads beyond name, workers, aggregator and on_worker_loss."""
        return self.keys + (("staleness", "max_staleness") if self.stale else ())


#: the predict families (``Registered.family``) and each one's default model
SYNC, ASYNC = "sync", "async"
FAMILY_MODELS = {SYNC: "first-k-distinct", ASYNC: "every-arrival"}


def stale_rule(c: PolicyConfig):
    """The staleness rule ``policy.staleness`` and ``policy.max_staleness`` describe."""
    from hybridsgd.core.staleness import build_staleness

    return build_staleness(c.staleness, c.max_staleness)


def whole_workers(key: str, low: int = 1) -> Check:
    """A check: unset, or a whole number in [low, policy.workers]."""

    def check(value: Any, p: PolicyConfig) -> None:
        if value is not None and not low <= value <= p.workers:
            raise ConfigError(
                f"policy.{key}", f"must be in [{low}, policy.workers = {p.workers}] (got {value})"
            )

    return check


def one_of(key: str, *allowed: str) -> Check:
    """A check: one of ``allowed``."""

    def check(value: Any, p: PolicyConfig) -> None:
        _choice(f"policy.{key}", value, allowed)

    return check


#: every registered policy, by name, in registration order
REGISTRY: dict[str, Registered] = {}
#: every policy-specific key: its field (type, default, help, check, example)
PARAMS: dict[str, dataclasses.Field] = {}
_TYPES: dict[str, Any] = {}
_OWNERS: dict[str, list[str]] = {}


def modules() -> list[str]:
    """The modules that registered a policy beyond hybridsgd's own (a user's, a test's):
    a fresh interpreter (a sweep's worker process, a Ray task) imports them to know the same
    policies."""
    names = {getattr(e.build, "__module__", None) for e in REGISTRY.values()}
    return sorted(n for n in names if n and not n.startswith("hybridsgd."))


def register(entry: Registered) -> Registered:
    """Add a policy. A key that several policies share (``k``) must be declared alike."""
    if entry.name in REGISTRY:
        raise ValueError(f"a policy named {entry.name!r} is already registered")
    hints = typing.get_type_hints(entry.params) if entry.params else {}
    for f in dataclasses.fields(entry.params) if entry.params else ():
        if f.name in SHARED_KEYS:
            raise ValueError(f"{entry.name}: {f.name} is a shared [policy] key")
        known = PARAMS.get(f.name)
        if known is not None and (known.default != f.default or _TYPES[f.name] != hints[f.name]):
            raise ValueError(
                f"{entry.name}: key {f.name!r} is declared differently by {_OWNERS[f.name]}"
            )
        if known is None:
            PARAMS[f.name], _TYPES[f.name] = f, hints[f.name]
        _OWNERS.setdefault(f.name, []).append(entry.name)
    REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a policy (tests register examples of their own)."""
    entry = REGISTRY.pop(name)
    for key in entry.keys:
        _OWNERS[key].remove(name)
        if not _OWNERS[key]:
            del _OWNERS[key], PARAMS[key], _TYPES[key]


def aliases() -> dict[str, str]:
    """Every spec alias of every policy (``b`` -> ``backups``, ``s`` -> ``staleness_bound``)."""
    out: dict[str, str] = {}
    for entry in REGISTRY.values():
        out.update(entry.aliases)
    return out


def family(name: str) -> tuple[str, ...]:
    """The registered policies of a predict family (``sync`` or ``async``), in order."""
    return tuple(n for n, e in REGISTRY.items() if e.family == name)


# -- the [policy] section ---------------------------------------------------------------------
SHARED_KEYS = ("name", "workers", "aggregator", "staleness", "max_staleness", "on_worker_loss")


@dataclass(init=False)
class PolicyConfig:
    """How updates are synchronised (README, Policies; docs/policies.md): the keys every
    policy shares, and in ``options`` the keys of the chosen policy (and any other
    registered policy's keys that were set). The chosen policy's own keys are attributes:
    ``PolicyConfig(name="k_sync", k=4).k`` is 4, and a key that was not set is its
    declared default; another policy's key is in ``options`` only, if it was set.
    """

    name: str = "sync"  # a registered policy: sync, backup, async, k_sync, ..., hybrid
    workers: int = 8  # W: workers running (for backup, N + b)
    aggregator: str = "mean"
    staleness: str = "none"  # none | inverse | inverse-sqrt | max (stale gradients only)
    max_staleness: int | None = None  # drop gradients staler than this (any rule)
    on_worker_loss: str = "shrink"  # real backends: a dead worker "shrink"-s the quorum or "fail"-s
    options: dict[str, Any] = field(default_factory=dict)  # the policies' own keys, as set

    def __init__(
        self,
        name: str = "sync",
        workers: int = 8,
        aggregator: str = "mean",
        staleness: str = "none",
        max_staleness: int | None = None,
        on_worker_loss: str = "shrink",
        options: dict[str, Any] | None = None,
        **own: Any,
    ) -> None:
        self.name, self.workers, self.aggregator = name, workers, aggregator
        self.staleness, self.max_staleness, self.on_worker_loss = (
            staleness,
            max_staleness,
            on_worker_loss,
        )
        merged = {**(options or {}), **own}
        unknown = sorted(set(merged) - set(PARAMS))
        if unknown:
            raise ConfigError(f"policy.{unknown[0]}", unknown_key_message(name, unknown[0]))
        self.options = merged
        # the chosen policy's own keys are attributes: set, or their declared default
        entry = REGISTRY.get(name)
        for key in entry.keys if entry is not None else ():
            setattr(self, key, merged.get(key, PARAMS[key].default))

    def __getattr__(self, key: str) -> Any:  # only for names that are not attributes
        # (no fallback: another policy's key is not this config's, and reads as an error)
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"policy.{key} is not a key of {self.__dict__.get('name')!r}; "
            "another policy's keys are in PolicyConfig.options when set"
        )

    def own_keys(self) -> tuple[str, ...]:
        """The chosen policy's own keys."""
        entry = REGISTRY.get(self.name)
        return entry.keys if entry else ()

    def flat(self) -> dict[str, Any]:
        """The section as one flat table: the shared keys, the chosen policy's own keys
        (defaults included), then any other key that was set."""
        out = {k: getattr(self, k) for k in SHARED_KEYS}
        for key in self.own_keys():
            out[key] = getattr(self, key)
        for key, value in self.options.items():
            out.setdefault(key, value)
        return out


def section(values: dict[str, Any]) -> PolicyConfig:
    """A ``[policy]`` table (as read from TOML) as a :class:`PolicyConfig`: every value
    coerced to its key's type, an unknown key refused with the keys there are. Not yet
    validated across keys (see :func:`validate`)."""
    from hybridsgd.values import coerce

    hints = typing.get_type_hints(PolicyConfig)
    kwargs = {}
    names = aliases()
    for short, key in names.items():  # a spec's short name (s, b, K, beta) is a key too
        if short in values and short not in PARAMS and short not in SHARED_KEYS:
            if key in values:
                raise ConfigError(
                    f"policy.{short}", f"is another name of policy.{key}, which is set too"
                )
            values = {(key if k == short else k): v for k, v in values.items()}
    for key, value in values.items():
        if key in PARAMS:
            kwargs[key] = coerce(f"policy.{key}", value, _TYPES[key])
        elif key in SHARED_KEYS:
            kwargs[key] = coerce(f"policy.{key}", value, hints[key])
        else:
            raise ConfigError(
                f"policy.{key}", unknown_key_message(str(values.get("name", "sync")), key)
            )
    return PolicyConfig(**kwargs)


def unknown_key_message(name: str, key: str = "") -> str:
    """Why ``key`` is not a ``[policy]`` key: the closest key there is, and the keys of
    every policy and of policy ``name``."""
    from hybridsgd.errors import suggest

    entry = REGISTRY.get(name)
    own = ""
    if entry and entry.keys:
        named = [
            k + "".join(f" (or {a})" for a, key in entry.aliases.items() if key == k)
            for k in entry.keys
        ]
        own = f"; {name} takes: {', '.join(named)}"
    close = suggest(key, [*SHARED_KEYS, *PARAMS, *aliases()]) if key else ""
    return f"unknown key{close}; every policy takes: {', '.join(SHARED_KEYS)}{own}"


def validate(p: PolicyConfig) -> None:
    """The ``[policy]`` section's checks: the name, the shared keys, every option that was
    set (its own bound), the chosen policy's required keys, and the aggregator against the
    gradients an update may combine. Raises :class:`ConfigError` naming the field."""
    from hybridsgd.core.aggregators import build_aggregator
    from hybridsgd.core.staleness import build_staleness
    from hybridsgd.errors import lookup

    entry = lookup(REGISTRY, p.name, "policy.name", "value")
    if not p.workers > 0:
        raise ConfigError("policy.workers", f"must be > 0 (got {p.workers})")
    for key in PARAMS:  # set or not: a default is in bounds, and checks see the whole section
        check = PARAMS[key].metadata["check"]
        if check is not None and (key in p.options or key in entry.keys):
            check(p.options[key] if key in p.options else getattr(p, key), p)
    for key in entry.required:
        if getattr(p, key) is None or getattr(p, key) == "":
            example = PARAMS[key].metadata["example"]
            raise ConfigError(
                f"policy.{key}",
                f"is required by {p.name}"
                + (f" (e.g. --set policy.{key}={example})" if example else ""),
            )
    _choice("policy.on_worker_loss", p.on_worker_loss, ("shrink", "fail"))
    aggregator = build_aggregator(p.aggregator)
    if entry.table is not None and aggregator.name != "mean":
        raise ConfigError(
            "policy.aggregator",
            f"{p.name} steps with the mean of its gradient table; it takes no other "
            f"aggregator (remove policy.aggregator = {p.aggregator!r})",
        )
    if not aggregator.linear:
        n = entry.min_gradients(p)
        if n < 2:
            raise ConfigError(
                "policy.aggregator",
                f"{aggregator.describe()} needs several gradients per update, but {p.name}"
                " applies gradients one at a time; use k_async or k_batch_async with k > 1,"
                " or a synchronous policy",
            )
        aggregator.check(n, f"{p.name} with these settings gives {n}")
    build_staleness(p.staleness, p.max_staleness)


def _choice(name: str, value: str, allowed) -> None:
    from hybridsgd.errors import lookup

    lookup(dict.fromkeys(allowed), value, name)
