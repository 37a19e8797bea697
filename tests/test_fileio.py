"""Atomic writes keep the previous version on a full disk; the bounded YAML loader reads what safe_load_all reads
and refuses alias bombs, long lists and oversized manifests before building anything."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from hpo_lib import fileio, limits
from hpo_lib.errors import ConfigError, WriteError

ROOT = Path(__file__).resolve().parents[1]


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_replaces_the_file_whole_and_keeps_its_mode(tmp_path):
    path = tmp_path / "trials.json"
    path.write_text("old")
    path.chmod(0o640)
    fileio.write_text(path, json.dumps({"a": 1}))
    assert json.loads(path.read_text()) == {"a": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    fileio.write_bytes(tmp_path / "new.bin", b"\x00\x01")
    assert (tmp_path / "new.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.bin", "trials.json"]  # no temporary file left


def test_a_full_disk_keeps_the_previous_version_and_says_so_in_one_line(tmp_path, monkeypatch):
    path = tmp_path / "trials.json"
    path.write_text('[{"name": "t0"}]')
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.raises(WriteError) as caught:
        fileio.write_text(path, json.dumps([{"name": f"t{i}"} for i in range(1000)]))
    message = str(caught.value)
    assert message == f"cannot write {path}: No space left on device; its previous version, if any, is unchanged"
    assert json.loads(path.read_text()) == [{"name": "t0"}]  # valid JSON: the old export, not a torn new one
    assert [p.name for p in tmp_path.iterdir()] == ["trials.json"]


def test_an_error_inside_the_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "trials.csv"
    path.write_text("name\nt0\n")
    with pytest.raises(RuntimeError), fileio.writing(path) as handle:
        handle.write("name\n")
        raise RuntimeError("the writer failed half way")
    assert path.read_text() == "name\nt0\n"
    assert [p.name for p in tmp_path.iterdir()] == ["trials.csv"]


def test_a_folder_that_cannot_be_written_is_a_write_error(tmp_path):
    with pytest.raises(WriteError, match="cannot write .*missing/out.json"):
        fileio.write_text(tmp_path / "missing" / "out.json", "{}")


@pytest.mark.parametrize("manifest", sorted((ROOT / "manifests").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_reads_as_safe_load_all_reads_it(manifest):
    text = manifest.read_text()
    assert fileio.load_yaml_all(text, str(manifest)) == list(yaml.safe_load_all(text))


def bomb(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_before_it_expands():
    with pytest.raises(ConfigError) as caught:
        fileio.load_yaml_all(bomb(), "manifest bomb.yaml")
    # each anchor a_i is one list of nine a_(i-1): 10, 91, 820, ... values; the mapping adds itself and its 9 keys
    sizes = [10]
    for _ in range(8):
        sizes.append(1 + 9 * sizes[-1])
    expanded = 1 + 9 + sum(sizes)
    assert str(caught.value).startswith(f"manifest bomb.yaml (document 0) with its aliases expanded is {expanded:,} ")
    assert "over the limit of 500,000 values" in str(caught.value) and limits.YAML_NODES.env in str(caught.value)


def test_aliases_within_the_bound_and_a_recursive_one_still_load():
    shared = "base: &b {lr: 0.1, epochs: 3}\nfirst: *b\nsecond: {<<: *b, epochs: 5}\n"
    assert fileio.load_yaml_all(shared, "m") == list(yaml.safe_load_all(shared))
    (loop,) = fileio.load_yaml_all("a: &a [1, *a]\n", "m")
    assert loop["a"][1] is loop["a"]


def test_a_list_over_the_limit_is_named_with_its_line(monkeypatch):
    text = "kind: Experiment\nspec:\n  list: [" + ",".join(str(i) for i in range(10_001)) + "]\n"
    with pytest.raises(ConfigError, match=r"^manifest m.yaml: the list at line 3 is 10,001 values, over the limit of "
                                          r"10,000 values .* raise it with HPO_LIMIT_LIST_VALUES=N$"):
        fileio.load_yaml_all(text, "manifest m.yaml")
    monkeypatch.setenv(limits.LIST_VALUES.env, "20000")  # raised for this run: it loads
    assert len(fileio.load_yaml_all(text, "manifest m.yaml")[0]["spec"]["list"]) == 10_001


def test_a_manifest_over_the_size_limit_is_refused_before_parsing(monkeypatch):
    monkeypatch.setenv(limits.MANIFEST_BYTES.env, "100")
    with pytest.raises(ConfigError, match=r"^manifest m.yaml is 121 bytes, over the limit of 100 bytes \(etcd"):
        fileio.load_yaml_all("a: [" + "1," * 57 + "1]\n", "manifest m.yaml")


def test_a_manifest_file_is_refused_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text("a: 1\n" * 400_000)  # 2,000,000 bytes: over etcd's 1.5 MiB
    read = []
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: read.append(self) or "")
    with pytest.raises(ConfigError, match=r"^manifest big.yaml is 2,000,000 bytes, over the limit of 1,572,864 bytes"):
        fileio.read_manifest(path, "manifest big.yaml")
    assert read == []  # refused from its size alone
