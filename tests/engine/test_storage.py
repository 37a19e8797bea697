"""The stored study: a storage that cannot be opened, or is held by another writer, is one clear error."""

from __future__ import annotations

import sqlite3

import pytest

from hpo_lib import engine
from hpo_lib.errors import ConfigError
from tests.conftest import manifest, options


def test_unwritable_storage_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    opts = options(tmp_path)
    opts.storage = f"sqlite:///{blocker / 'studies.db'}"
    # a storage that cannot be opened is one ConfigError naming it
    with pytest.raises(ConfigError, match="cannot open study storage"):
        engine.run(manifest(tmp_path), opts)


def test_locked_storage_is_one_clear_error(tmp_path):
    path = manifest(tmp_path)
    engine.run(path, options(tmp_path, curves="1"))  # the database exists with the study in it
    holder = sqlite3.connect(tmp_path / "state" / "studies.db", timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        opts = options(tmp_path)
        opts.max_trials = 5
        # another writer holding the database is one ConfigError saying it is locked
        with pytest.raises(ConfigError, match="locked"):
            engine.run(path, opts)
    finally:
        holder.rollback()
        holder.close()
