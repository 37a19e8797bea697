"""The files a user reads, written whole or not at all; the YAML a user gives, read within bounds.

* :func:`write_text` / :func:`write_bytes` / :func:`writing`: the new content goes to a temporary file in the same
  folder, is flushed to the disk (fsync) and renamed over the old file (``os.replace``, atomic on POSIX). A reader
  sees the old version or the new one, never half of one; a full disk leaves the old version as it was and raises
  :class:`hpo_lib.errors.WriteError`, one line naming the file and the cause.
* :func:`load_yaml_all`: ``yaml.safe_load_all`` with the manifest's size bounded and aliases that expand past
  :data:`hpo_lib.limits.YAML_NODES` values refused before anything is built (a "billion laughs" manifest is a few
  hundred bytes that expand to gigabytes).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import yaml

from hpo_lib import limits
from hpo_lib.errors import ConfigError, WriteError, first_line


# ----------------------------------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def writing(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """A file object whose content replaces ``path`` when the block ends without an exception; otherwise ``path``
    keeps its old content and the temporary file is removed. ``mode``: ``"w"`` (text) or ``"wb"``."""
    path = Path(path)
    binary = "b" in mode
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(_cannot(path, exc)) from None
    try:
        opened = os.fdopen(fd, mode) if binary else os.fdopen(fd, mode, encoding=encoding, newline="")
        with opened as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode(path, temp)
        os.replace(temp, path)
    except OSError as exc:
        _remove(temp)
        raise WriteError(_cannot(path, exc)) from None
    except BaseException:
        _remove(temp)
        raise


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Replace ``path``'s content with ``text``, atomically (see the module)."""
    with writing(path, "w", encoding) as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path``'s content with ``data``, atomically (see the module)."""
    with writing(path, "wb", None) as handle:
        handle.write(data)


def _cannot(path: Path, exc: OSError) -> str:
    cause = exc.strerror or first_line(exc)
    return f"cannot write {path}: {cause}; its previous version, if any, is unchanged"


def _keep_mode(path: Path, temp: str) -> None:
    """The new file keeps the old one's permissions (mkstemp makes it 0600), or the umask's default for a new one."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(temp, mode)


def _remove(temp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temp)


# ----------------------------------------------------------------------------------------------- bounded YAML
def read_manifest(path: str | Path, source: str) -> str:
    """A manifest file's text, refused by its size (:data:`~hpo_lib.limits.MANIFEST_BYTES`) before it is read, so a
    huge file costs a stat, not its size in memory. OSError (missing, unreadable) is left to the caller to word."""
    limits.MANIFEST_BYTES.check(source, Path(path).stat().st_size)
    return Path(path).read_text()


def load_yaml_all(text: str, source: str) -> list[Any]:
    """Every document of a YAML text (``yaml.safe_load_all``), refused with a one-line ConfigError when the text is
    over :data:`~hpo_lib.limits.MANIFEST_BYTES`, a list is longer than :data:`~hpo_lib.limits.LIST_VALUES` or a
    document's aliases expand past :data:`~hpo_lib.limits.YAML_NODES` values. Nothing is built before these are
    checked; parse errors still raise ``yaml.YAMLError`` for the caller to word."""
    limits.MANIFEST_BYTES.check(source, len(text.encode("utf-8", "replace")))
    bound = limits.YAML_NODES.value
    loader = yaml.SafeLoader(text)
    try:
        return _documents(loader, source, bound)
    except RecursionError:
        raise ConfigError(f"{source} nests its values too deeply to be read") from None
    finally:
        loader.dispose()


def _documents(loader: yaml.SafeLoader, source: str, bound: float) -> list[Any]:
    docs: list[Any] = []
    while loader.check_node():
        node = loader.get_node()
        size = _expanded_size(node, {}, source)
        if size > bound:
            limits.YAML_NODES.check(f"{source} (document {len(docs)}) with its aliases expanded", size)
        docs.append(loader.construct_document(node))
    return docs


def _expanded_size(node: yaml.Node, sizes: dict[int, int], source: str) -> int:
    """How many values ``node`` stands for once every alias is written out; each node is counted once (``sizes``
    keeps what is known), so a few nested aliases cost as many steps as they have nodes, not as they expand to."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias (a node inside itself) counts once, not forever
    total = 1
    if isinstance(node, yaml.SequenceNode):
        if limits.LIST_VALUES.exceeded(len(node.value)):
            raise ConfigError(
                limits.LIST_VALUES.refusal(f"{source}: the list at line {node.start_mark.line + 1}", len(node.value))
            )
        total += sum(_expanded_size(child, sizes, source) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_expanded_size(k, sizes, source) + _expanded_size(v, sizes, source) for k, v in node.value)
    sizes[id(node)] = total
    return total
