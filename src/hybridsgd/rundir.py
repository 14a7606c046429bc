"""A run directory: the lock that holds it for one run, the files a run writes there, and
the checkpoint a simulated run can resume from.

Checkpoint format 3: one header line, ``hybridsgd-checkpoint 3 <sha256>``, then the
run's state as ``torch.save`` writes a plain dict; the SHA-256 covers every byte after the
header, so any damage reads "is damaged" before anything is unpickled. Format 2 (a
``torch.save``'d dict holding the serialised state and its SHA-256) still loads."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tomli_w
import torch

from hybridsgd import __version__
from hybridsgd.backends.sim.replay import ReplayState
from hybridsgd.config import Config
from hybridsgd.core.server import ParameterServer
from hybridsgd.errors import ConfigError, NotSaved
from hybridsgd.trace import _atomic

CHECKPOINT = "checkpoint.pt"
#: the files of a run directory (a new run into it replaces all of them, or none)
RUN_FILES = ("summary.json", "config.toml", "gradients.csv", "updates.csv", "evals.csv", CHECKPOINT)


#: where ``--force`` keeps the run it replaces until the new run completes
REPLACED = ".replaced"


@contextlib.contextmanager
def claimed(out: Path, *, force: bool = False, resuming: bool = False) -> Iterator[Path]:
    """Hold ``out`` for one run: an exclusive lock for the run's whole life (a second run
    into it is refused in one line), and, for a new run, the old run's files refused, or
    with ``force`` moved aside into ``out/.replaced`` before anything is written. The old
    run is removed only once the new one completes (:func:`completed`): a replacement
    that is interrupted, fails or runs out of disk leaves it whole there."""
    out = writable_dir(out)
    with open(out / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                "--out", f"{out} is in use by another run; wait for it or choose another"
            ) from None
        for stale in out.glob(".*.tmp"):  # half-written by a run that died: the lock says so
            stale.unlink()
        held = [n for n in RUN_FILES if (out / n).exists()]
        if held == ["config.toml"] and not resuming:  # a run killed before its first
            (out / "config.toml").unlink()  # checkpoint: nothing of it to keep or resume
        _restore_if_unreplaced(out)  # (after that: such a run may have been a replacement)
        held = [n for n in RUN_FILES if (out / n).exists()]
        if held and not resuming:
            if not force:
                what = (
                    "an interrupted run: --resume it (h.resume), or"
                    if CHECKPOINT in held
                    else "a run: choose another directory, or"
                )
                raise ConfigError("--out", f"{out} holds {what} --force (force=True) to replace it")
            _set_aside(out, held)
        yield out


def _complete(out: Path) -> bool:
    """Whether ``out`` holds a whole run: a summary of a run that was not interrupted and
    did not stop on an error, its tables, and no checkpoint left to resume."""
    if (out / CHECKPOINT).exists() or not all((out / n).exists() for n in RUN_FILES[:-1]):
        return False
    try:
        summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return not (summary.get("interrupted") or summary.get("error") or summary.get("incomplete"))


def holds(out: Path, cfg: Config) -> bool:
    """Whether ``out`` holds a whole run of ``cfg`` (a resumed sweep keeps it)."""
    if not _complete(out):
        return False
    try:
        return Config.load(out / "config.toml").to_dict() == cfg.to_dict()
    except (ConfigError, OSError):
        return False


def _set_aside(out: Path, held: list[str]) -> None:
    """``--force``: the run in ``out`` goes into ``out/.replaced`` (renames, no copy). If
    ``.replaced`` already holds a run that an earlier replacement did not complete, that one
    is kept and what is in ``out`` (the unfinished replacement) is dropped."""
    aside = out / REPLACED
    if aside.exists() and not _complete(out):
        for name in held:
            (out / name).unlink()
        return
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for name in held:
        os.replace(out / name, aside / name)


def _restore_if_unreplaced(out: Path) -> None:
    """A replacement that died before writing anything leaves ``out`` empty beside
    ``.replaced``: the old run goes back in place."""
    aside = out / REPLACED
    if aside.is_dir() and not any((out / n).exists() for n in RUN_FILES):
        for f in aside.iterdir():
            os.replace(f, out / f.name)
        aside.rmdir()


def completed(out: Path) -> None:
    """The run in ``out`` is complete: the run it replaced (``--force``) can go."""
    shutil.rmtree(out / REPLACED, ignore_errors=True)


def replaced_note(out: Path) -> str:
    """What a message says about the run ``--force`` would have replaced, if any."""
    if (out / REPLACED).is_dir():
        return f"; the run it replaces is kept in {out / REPLACED} until one completes"
    return ""


#: config keys a resumed run may change: they do not change what is trained (run.threads
#: may change the last bits: torch's reductions sum in an order that depends on it)
SAFE_TO_CHANGE = (
    "run.threads",
    "run.checkpoint_every",
    "run.eval_every",
    "run.target_accuracy",
    "run.target_search",
)


def _canonical(config: dict) -> dict:
    """A config dict as this version writes it (an older checkpoint's ``[policy]`` listed
    every policy's keys; now it lists the chosen policy's), or as it is if it no longer
    validates (then every difference shows)."""
    try:
        return Config.from_dict(config).to_dict()
    except ConfigError:
        return config


def _changed_keys(before: dict, after: dict) -> list[str]:
    """``section.key`` of every value that differs between two config dicts."""
    return sorted(
        f"{section}.{key}"
        for section in before.keys() | after.keys()
        for key in before.get(section, {}).keys() | after.get(section, {}).keys()
        if before.get(section, {}).get(key) != after.get(section, {}).get(key)
    )


def read_checkpoint(out: Path, cfg: Config, allow_change: list[str] | tuple[str, ...]) -> dict:
    """The state of the checkpoint in ``out``, after checking its format, its checksum and
    that ``cfg`` is the config it was written with (up to ``allow_change``)."""
    path = out / CHECKPOINT
    damaged = f"{path} is damaged (its content does not match its checksum)"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("checkpoint", f"{path} cannot be read ({exc.strerror})") from None
    if data.startswith(MAGIC):
        header, _, payload = data.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != header[len(MAGIC) :].strip():
            raise ConfigError("checkpoint", damaged)
    else:
        payload = _format2_payload(path, data, damaged)
    try:
        state = torch.serialization.load(io.BytesIO(payload), weights_only=False)
    except Exception as exc:  # a checksum that matches content we cannot load: not ours
        raise ConfigError("checkpoint", f"{path} cannot be loaded ({exc})") from None
    changed = [
        k
        for k in _changed_keys(_canonical(state["config"]), cfg.to_dict())
        if k not in allow_change
    ]
    if changed:
        raise ConfigError(
            "checkpoint",
            f"{out / 'config.toml'} changed since the checkpoint ({', '.join(changed)}); "
            "a resumed run continues the config it started with: restore it, start a new run, "
            f"or --allow-change the keys that do not change training ({', '.join(SAFE_TO_CHANGE)})",
        )
    return state


#: the first bytes of a format-3 checkpoint; the hex SHA-256 of the rest follows on that line
MAGIC = b"hybridsgd-checkpoint 3 "


def _format2_payload(path: Path, data: bytes, damaged: str) -> bytes:
    """The state of a format-2 checkpoint (a torch.save'd dict with the serialised state
    and its SHA-256); a file that loads as neither format is damaged or not ours."""
    try:
        outer = torch.load(io.BytesIO(data), weights_only=False)
    except Exception:  # a damaged byte can break the outer pickle itself
        raise ConfigError(
            "checkpoint", f"{damaged[:-1]}, or it is not a hybridsgd checkpoint)"
        ) from None
    if not isinstance(outer, dict) or outer.get("format") != 2:
        raise ConfigError("checkpoint", f"{path} is not a hybridsgd checkpoint")
    payload = outer.get("payload", b"")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != outer.get("sha256"):
        raise ConfigError("checkpoint", damaged)
    return payload


def writable_dir(out: str | Path, field: str = "--out") -> Path:
    """``out`` as a directory this process can write, made if needed: checked before any
    training, so a finished run is never lost to an unwritable destination."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(field, f"{out} is a file, not a directory; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".hybridsgd-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            field, f"{out} cannot be written ({exc.strerror or exc}); give a writable directory"
        ) from None
    return out


def checkpointer(cfg: Config, out: Path, server: ParameterServer, fingerprint: list):
    """Writes ``out/checkpoint.pt`` atomically (write, fsync, rename): a crash mid-write
    leaves the previous checkpoint whole. It holds the run's state (format 3, see the module
    doc) with the config it belongs to: resume refuses a damaged file or a changed config."""
    out.mkdir(parents=True, exist_ok=True)
    _atomic(out / "config.toml", lambda p: Path(p).write_text(to_toml(cfg.to_dict())))

    def save(st: ReplayState) -> None:
        state = {
            "hybridsgd": __version__,
            "config": cfg.to_dict(),
            "fingerprint": fingerprint,
            "server": server.state_dict(),
            "replay": st,
            "rng": torch.get_rng_state(),  # a model's dropout goes on as it would have
        }
        # the state is serialised first; its SHA-256 heads the file, which resume checks
        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getvalue()
        header = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n"
        try:
            _atomic(out / CHECKPOINT, lambda p: _write_bytes(p, header + payload))
        except NotSaved as exc:
            then = (
                f"the last checkpoint is kept: free space, then --resume {out}"
                if (out / CHECKPOINT).exists()
                else "no checkpoint was written yet: free space and run again"
            )
            raise type(exc)(f"{exc}; {then}{replaced_note(out)}") from None

    return save


def _write_bytes(path: str | Path, data: bytes) -> None:
    Path(path).write_bytes(data)


def to_toml(data: dict[str, Any]) -> str:
    """A config dict as TOML, written by tomli-w (infinity as TOML's ``inf``, so that every
    saved config loads back); None values are left out, as unset."""

    def drop_none(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: drop_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, list | tuple):
            return [drop_none(x) for x in v]
        return v

    return tomli_w.dumps(drop_none(data))
