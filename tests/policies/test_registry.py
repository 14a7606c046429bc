"""The policy registry: a policy declared in one file works everywhere, and nothing about
the built-in policies lives outside their own modules."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hybridsgd as h
from hybridsgd.cli import main
from hybridsgd.errors import ConfigError
from hybridsgd.policies import POLICIES, REGISTRY, Context, parse_spec, policy_config, unregister
from tests.helpers import make_config


@pytest.fixture
def majority():
    """tests/policies/example_policy.py registered for one test, then removed."""
    module = importlib.import_module("tests.policies.example_policy")
    yield module
    unregister("majority")
    sys.modules.pop("tests.policies.example_policy")


BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "policy": {"workers": 4},
    "run": {"updates": 20, "eval_every": 10},
}


def config(**policy) -> h.Config:
    return make_config(BASE, policy=policy)


def test_a_policy_in_one_file_works_in_config_sim_and_local(majority):
    cfg = config(name="majority", fraction=0.75)
    assert cfg.policy.fraction == 0.75
    assert cfg.to_dict()["policy"]["fraction"] == 0.75
    assert h.Config.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    sim = h.run(cfg)
    g = sim.trace.gradients
    assert (g[g.fate == "applied"].groupby("update").size() == 3).all()  # ceil(0.75 x 4)
    assert sim.summary["policy"].startswith("majority")
    local = h.run(cfg.replace("run.backend=local"))
    g = local.trace.gradients
    assert (g[g.fate == "applied"].groupby("update").size() == 3).all()
    assert torch.isfinite(local.params).all()


def test_its_keys_bounds_and_aliases_come_from_its_declaration(majority):
    with pytest.raises(ConfigError, match=r"policy.fraction: must be in \(0, 1\] \(got 2.0\)"):
        config(name="majority", fraction=2)
    assert parse_spec("majority:f=0.25")[1] == ["policy.name=majority", "policy.fraction=0.25"]
    with pytest.raises(ConfigError) as err:
        config(name="majority", k=2).replace("policy.fractoin=1")
    assert str(err.value).startswith("policy.fractoin: unknown key (did you mean fraction?); every")
    assert str(err.value).endswith("majority takes: fraction (or f)")
    with pytest.raises(ConfigError) as err:  # its min_gradients: ceil(0.5 x 4) = 2
        config(name="majority", fraction=0.5, aggregator="krum:f=1")
    assert str(err.value) == (
        "policy.aggregator: krum(f=1) needs at least 5 gradients per update, but majority with"
        " these settings gives 2"
    )


def test_predict_covers_it_through_its_family_and_min_gradients(majority):
    from hybridsgd.forecast import predict_config

    cfg = h.Config.from_dict(
        {"policy": {"name": "majority", "workers": 12, "fraction": 0.75},
         "timing": {"compute": "shifted-exp:delta=1,mu=2"}}
    )  # fmt: skip
    ours = predict_config(cfg)
    k_sync = predict_config(cfg.replace("policy.name=k_sync", "policy.k=9"))
    assert ours.quorum == 9 and ours.mean_update_time == k_sync.mean_update_time
    # docs/design.md section 4: delta + (H_W - H_{W-K}) / mu, computed here in float64
    harmonic = sum(1 / i for i in range(4, 13))  # H_12 - H_3
    assert ours.mean_update_time == pytest.approx(1 + harmonic / 2, rel=1e-9)


def test_recommend_ranks_it_among_the_others(majority):
    from hybridsgd.analysis.recommend import recommend

    ranked = {
        c.spec: c for c in recommend(16, h.parse_model("shifted-exp:delta=1,mu=2"), 0.05, 1.0)
    }
    ours, same = ranked["majority:fraction=0.75"], ranked["k_sync:k=12"]  # ceil(0.75 x 16)
    assert ours.prediction is not None
    assert ours.time_to_1000x == same.time_to_1000x


@pytest.mark.slow
def test_it_runs_from_the_cli(majority, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(
        ["compare", "examples/digits-backup.toml", "--out", str(out), "--policy",
         "majority:fraction=0.5", "--policy", "sync", "--set", "run.updates=20"]
    )  # fmt: skip
    assert code == 0
    assert "majority" in capsys.readouterr().out
    assert any(p.name.startswith("majority") for p in (out / "runs").iterdir())


def test_the_built_in_policies_all_declare_themselves():
    assert set(REGISTRY) == {
        "adaptive", "async", "backup", "sync", "hybrid", "k_sync", "k_batch_sync", "k_async",
        "k_batch_async", "ssp", "psp", "rennala", "ringmaster", "m_sync", "malenia", "ia2sgd",
        "ringleader", "rescaled", "dc_asgd", "mindflayer", "ata",
    }  # fmt: skip
    assert set(POLICIES) == set(REGISTRY)
    for entry in REGISTRY.values():
        # the registry's word on a gradient table is the policy's own
        built = entry.build(policy_config(entry.examples[0]), Context())
        assert built.table == entry.table, entry.name
        assert entry.summary and entry.examples, entry.name
        for spec in entry.examples:
            name, overrides = parse_spec(spec)
            assert name == entry.name
            h.Config.from_dict({}, overrides)  # every example validates


@pytest.mark.slow
def test_no_import_cycle_and_imports_run_one_way():
    """Every module imports on its own in a fresh interpreter, and imports run one way:
    core <- policies <- coordinator <- record <- backends <- runner <- app <- cli."""
    src = Path(__file__).parents[2] / "src" / "hybridsgd"
    modules = sorted(
        ".".join(("hybridsgd", *p.relative_to(src).with_suffix("").parts)).removesuffix(".__init__")
        for p in src.rglob("*.py")
        if "ray" not in p.parts and p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    for k in [k for k in sys.modules if k.startswith('hybridsgd')]: del sys.modules[k]\n"
        "    importlib.import_module(m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=src.parents[1])
    # each layer may import the layers before it, never those after it
    layers = ["core", "policies", "coordinator", "record", "backends", "runner", "app", "cli"]
    for i, layer in enumerate(layers[:-1]):
        path = src / layer
        files = [path.with_suffix(".py")] if not path.is_dir() else list(path.rglob("*.py"))
        for f in files:
            text = f.read_text()
            for upper in layers[i + 1 :]:
                for form in (f"from hybridsgd.{upper}", f"import hybridsgd.{upper}"):
                    assert form not in text, f"{f.relative_to(src)} imports hybridsgd.{upper}"
    for f in [*(src / "core").rglob("*.py"), *(src / "policies").rglob("*.py")]:
        assert "hybridsgd.config" not in f.read_text(), f  # the [policy] section is the registry's


def test_the_help_lists_each_policy_with_its_own_keys(majority, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert "  majority: the first ceil(fraction x W) gradients of each version" in out
    assert "      fraction (or f): share of the W workers an update waits for" in out
    assert "      k (or K): K: gradients per update, 1 <= K <= W, required" in out


def test_no_module_outside_the_policies_names_a_policy():
    """The registry is the single source of policy knowledge: no string in src/ outside
    policies/ names a registered policy (nor a spec of one, "k_async:k=2"). Docstrings and
    comments may; the package's own __init__ lists the policy constructors it exports
    (h.sync, h.backup), and the shipped examples are a user's files."""
    import io
    import re
    import tokenize

    from hybridsgd.policies import REGISTRY

    src = Path(__file__).parents[2] / "src" / "hybridsgd"
    spec = re.compile(rf"^({'|'.join(map(re.escape, REGISTRY))})([:(]|$)")
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if rel.parts[0] in ("policies", "examples") or str(rel) == "__init__.py":
            continue
        tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
        for i, tok in enumerate(tokens):
            if tok.type != tokenize.STRING:
                continue
            before = tokens[i - 1].type if i else tokenize.NEWLINE
            after = tokens[i + 1].type
            alone = before in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE, tokenize.NL)
            if alone and after == tokenize.NEWLINE:  # a docstring
                continue
            body = re.sub(r"^[rbuf]*(\"\"\"|'''|\"|')", "", tok.string, flags=re.I)
            if spec.match(body):
                found.append(f"{rel}:{tok.start[0]}: {tok.string}")
    assert not found, "policy names outside src/hybridsgd/policies/:\n" + "\n".join(found)
