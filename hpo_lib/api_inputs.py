"""What the API checks of what a caller hands it, once for every call (and so for every ``hpo`` command): a
manifest given as a path, YAML text or a dict; folders (writable, not a file); numbers and choices; a study
storage that cannot be read, or that fails mid-study. Each refusal is one :class:`~hpo_lib.errors.ConfigError`
(or :class:`~hpo_lib.errors.HpoError`) whose message opens with the argument's name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_lib.errors import ConfigError, HpoError, first_line, redact

if TYPE_CHECKING:
    import optuna

Manifest = str | os.PathLike[str] | Mapping[str, Any]
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def manifest_file(manifest: Manifest, state_dir: Path) -> Path:
    """The file of a manifest given as a path, as YAML text or as a dict (text and dicts are written to
    ``<state_dir>/manifests/<name>-<digest>.yaml``, one file per distinct content). Invalid YAML, a document that
    is no Experiment or a dict YAML cannot hold is refused in one line; the Experiment's rules are checked by
    whoever loads the file. A path that is missing or a folder is refused before anything heavy is imported."""
    if isinstance(manifest, os.PathLike) or (isinstance(manifest, str) and "\n" not in manifest):
        if not os.fspath(manifest):
            raise ConfigError("manifest must be a path, YAML text or a dict, got an empty string")
        path = Path(manifest)
        if path.is_dir():
            raise ConfigError(f"manifest {path} is a folder: give the Experiment's YAML file")
        if not path.exists():
            raise ConfigError(f"manifest {path} does not exist")
        return path
    import yaml

    from hpo_lib.katib import experiment

    if isinstance(manifest, str):
        text = manifest
        doc = experiment.parse_experiment(text, "manifest text")
    elif isinstance(manifest, Mapping):
        doc = dict(manifest)
        if doc.get("kind") != "Experiment":
            raise ConfigError(
                f"manifest dict must be a Katib Experiment (kind: Experiment), got kind {doc.get('kind')!r}"
            )
        try:
            text = yaml.safe_dump(doc, sort_keys=False)
        except yaml.YAMLError as exc:
            raise ConfigError(f"manifest dict cannot be written as YAML: {first_line(exc)}") from None
    else:
        raise ConfigError(f"manifest must be a path, YAML text or a dict, got {type(manifest).__name__}")
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), Mapping) else None
    stem = name if isinstance(name, str) and _DNS_NAME.fullmatch(name) and len(name) <= 63 else "experiment"
    folder = writable_dir(state_dir, "state_dir") / "manifests"
    path = folder / f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    try:
        folder.mkdir(exist_ok=True)
        if not path.exists() or path.read_text() != text:
            from hpo_lib import fileio

            fileio.write_text(path, text)
    except OSError as exc:  # (a failed write is fileio's one-line WriteError, an HpoError)
        raise ConfigError(f"cannot write the manifest to {path}: {exc.strerror or first_line(exc)}") from None
    return path


def writable_dir(path: Path, setting: str) -> Path:
    """``path`` as a folder this user can write (created if missing), or one ConfigError naming the setting."""
    folder_arg(path, setting)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{setting} {path} cannot be written ({exc.strerror or type(exc).__name__}): give a folder this user may "
            "write"
        ) from None
    return path


def load_study(manifest: str | Path, options: Any) -> optuna.Study:
    """``engine.load_study``, with a storage that cannot be read (a corrupt or foreign SQLite file, a server that
    refuses) as one ConfigError."""
    from hpo_lib import engine

    try:
        return engine.load_study(manifest, options)
    except HpoError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and Optuna raise many types for an unusable storage
        raise ConfigError(
            f"cannot read study storage {redact(options.storage_url)}: {first_line(exc)}; is it the file or URL the "
            "tuning wrote? A damaged SQLite file cannot be repaired here: restore it or tune again in another state "
            "folder"
        ) from None


@contextlib.contextmanager
def storage_failures(storage: str, state_dir: str | os.PathLike[str]) -> Iterator[None]:
    """A study storage that fails mid-study (a full disk, a lost database server) as one HpoError: what finished
    is in the storage already, and running the same tuning again resumes."""
    import optuna
    import sqlalchemy.exc

    try:
        yield
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
        causes = [exc, *_causes(exc)]
        text = " ".join(first_line(c) for c in causes).lower()
        full = any(isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT) for c in causes)
        full = full or "disk is full" in text or "no space left" in text
        what = "the disk is full" if full else first_line(causes[-1])
        raise HpoError(
            f"the study storage {redact(storage)} failed mid-study: {what}; every trial that finished before is kept "
            f"there and under {os.fspath(state_dir)}/: free space (or fix the storage) and run the same tuning "
            "again to resume"
        ) from None


def _causes(exc: BaseException) -> list[BaseException]:
    """An exception's chain of causes and contexts, nearest first."""
    out: list[BaseException] = []
    nearer = exc.__cause__ or exc.__context__
    while nearer is not None and nearer not in out:
        out.append(nearer)
        nearer = nearer.__cause__ or nearer.__context__
    return out


def trial_overrides(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """Trial flag -> value as text (``--`` dropped, booleans as the flags spell them), as Katib passes them."""
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"overrides must be a dict of trial flag -> value, e.g. {{'data': 'sample:sp500'}}, got "
            f"{type(overrides).__name__}"
        )
    out = {}
    for name, value in overrides.items():
        if not isinstance(name, str) or not name.removeprefix("--"):
            raise ConfigError(f"overrides expects trial flag names as keys, got {name!r}")
        out[name.removeprefix("--")] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def at_least(name: str, value: Any, low: int) -> None:
    """Refuse an integer argument below ``low`` (None passes: the argument was not given)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")


def one_of(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def path_arg(value: Any, name: str) -> Path:
    """A folder argument as a Path: refused when it is no path, or empty."""
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigError(f"{name} must be a folder path, got {value!r}")
    return Path(value)


def folder_arg(value: Any, name: str) -> Path:
    """An output folder argument: refused when it is a file (created later, by whoever writes into it)."""
    path = path_arg(value, name)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name} {path} is a file, not a folder: give a folder (it is created if missing)")
    return path
