"""Where a study lives: open (or archive and start afresh), load, and the lock that serialises scheduling.

The storage is any Optuna RDB URL, SQLite under ``--state-dir`` by default. Several engines may share one study:
:class:`SchedulingLock` makes counting the budget and asking for a trial one step across them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, cast

import optuna

from hpo_lib.engine.options import TuneOptions
from hpo_lib.errors import ConfigError, first_line, redact
from hpo_lib.katib import experiment


def open_study(doc: dict[str, Any], options: TuneOptions, *, sampler=None, pruner=None) -> optuna.Study:
    """Create or load the experiment's study in the configured storage, with a clear error when it cannot."""
    import datetime

    from hpo_lib.engine import identity

    options.state_dir.mkdir(parents=True, exist_ok=True)
    storage = options.storage_url
    # cast: optuna's stub wants Literal directions; experiment.objectives yields only "minimize" or "maximize"
    directions = cast(list[Literal["minimize", "maximize"]], [o.direction for o in experiment.objectives(doc)])
    name = experiment.qualified_name(doc)
    try:
        if options.new_study and name in optuna.study.get_all_study_names(storage):
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            optuna.copy_study(
                from_study_name=name, from_storage=storage, to_storage=storage, to_study_name=f"{name}.archived-{stamp}"
            )
            optuna.delete_study(study_name=name, storage=storage)
        study = _create_study(storage, name, directions, sampler, pruner)
    except ValueError as exc:
        if "direction" in str(exc).lower():
            raise ConfigError(
                f"study {name} in {storage} was created with other objectives than this manifest declares: {exc}"
            ) from None
        raise ConfigError(f"cannot open study storage {redact(storage)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Optuna raise many types for an unusable storage
        first = first_line(exc)
        raise ConfigError(f"cannot open study storage {redact(storage)}: {first}") from None
    identity.check_or_record(study, doc)  # a study serves one experiment: refused before any ask
    return study


def _create_study(storage: str, name: str, directions, sampler, pruner, attempts: int = 8) -> optuna.Study:
    """``optuna.create_study(load_if_exists=True)``, retried when another process is creating the same storage.

    Two engines (or an engine and a reader) opening a fresh database at once race on its schema: one of them sees
    "table already exists", "UNIQUE constraint failed: alembic_version" or "database is locked" although nothing is
    wrong. Those errors are transient; anything else, and the last attempt, are raised as they are."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=name,
                load_if_exists=True,
                directions=directions,
                sampler=sampler,
                pruner=pruner,
            )
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as exc:
            text = str(exc).lower()
            transient = any(s in text for s in ("already exists", "unique constraint", "locked", "duplicate"))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def load_study(path: str | Path, options: TuneOptions) -> optuna.Study:
    """The study a manifest's earlier ``hpo tune`` wrote (for results, reports and the dashboard)."""
    name = experiment.qualified_name(experiment.load_experiment(path))
    storage = options.storage_url
    if options.storage is None and not options.study_db.exists():
        raise ConfigError(f"no studies under {options.state_dir}/: run `hpo tune {path}` first")
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError(f"no study {name} in {redact(storage)}: run `hpo tune {path}` first") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy/Optuna raise many types for an unreadable storage
        raise ConfigError(f"cannot read study storage {redact(storage)}: {first_line(exc)}") from None


class SchedulingLock:
    """Held while an engine counts the study's budget and asks for a trial, so engines sharing a study never
    overshoot ``maxTrialCount`` or ``parallelTrialCount``: an advisory lock on PostgreSQL, a file lock beside a
    SQLite database; on other databases the budget is checked without a lock (and may overshoot by a trial)."""

    def __init__(self, storage_url: str, study_name: str) -> None:
        import hashlib

        digest = hashlib.sha256(study_name.encode()).digest()
        self.url, self.key = storage_url, int.from_bytes(digest[:8], "big") >> 1  # a bigint for pg_advisory_lock
        self._file: Any = None
        self._engine: Any = None
        self._connection: Any = None

    def __enter__(self) -> SchedulingLock:
        import fcntl

        if self.url.startswith("sqlite:///"):
            self._file = open(Path(self.url.removeprefix("sqlite:///")).with_suffix(".lock"), "a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
        elif self.url.startswith(("postgresql", "postgres")):
            import sqlalchemy

            if self._engine is None:
                self._engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
            self._connection = self._engine.connect()
            self._connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        return self

    def __exit__(self, *exc_info) -> None:
        import fcntl

        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            import sqlalchemy

            try:
                self._connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            finally:
                self._connection.close()
                self._connection = None
