"""Atomic files, JSON and YAML, directories and their lock.

Every write goes to a temporary file in the target directory, is fsync'ed, then renamed over the
target, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from nndiff.errors import NndiffError


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def write_atomic(path: str | Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write` on a temporary file next to `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it (mkstemp's 0600 would keep the file private)
    except OSError as e:
        raise NndiffError(f"cannot write {path} ({e.strerror or e}); nothing was changed") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a directory made read-only meanwhile: the old file stands
        Path(tmp).unlink(missing_ok=True)
        raise NndiffError(f"cannot write {path} ({e.strerror or e}); the previous file, if any, is unchanged") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def file_digest(path: str | Path) -> str:
    """A file's SHA-256 (hex), read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _finite(obj: Any) -> Any:
    """NaN and Inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def save_json(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n").encode())


TEXT_BYTES = 64 * 2**20  # a JSON or YAML file nndiff reads: its own are kilobytes (a zoo's manifest a few MB)
JSON_DEPTH = 32  # nesting of a JSON file: nndiff's own go 4 levels deep


def _parse_file(path: str | Path, parse, kind: str, errors: tuple[type[Exception], ...]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise NndiffError(f"{path}: file not found")
    try:
        if path.stat().st_size > TEXT_BYTES:
            size = path.stat().st_size
            raise NndiffError(f"{path}: {size:,} bytes, more than any {kind} file nndiff reads; refused")
        return parse(path.read_text())
    except (*errors, UnicodeDecodeError) as e:
        raise NndiffError(f"{path}: not valid {kind} ({e})") from None
    except RecursionError:
        raise NndiffError(f"{path}: {kind} nested too deeply; refused") from None
    except OSError as e:
        raise NndiffError(f"{path}: cannot read it ({e.strerror})") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the key {twice!r} appears twice in one object")
    return dict(pairs)


def _depth(obj: Any) -> int:
    """How deeply `obj` nests (a scalar: 0), without recursion."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                todo.append((child, level + 1))
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
    return deepest


def load_json(path: str | Path) -> Any:
    """A JSON file, refused when larger than TEXT_BYTES, nested deeper than JSON_DEPTH or naming a
    key twice in one object (which parsers resolve differently)."""

    def parse(text: str) -> Any:
        data = json.loads(text, object_pairs_hook=_unique_keys)
        if _depth(data) > JSON_DEPTH:
            raise NndiffError(f"{path}: JSON nested more than {JSON_DEPTH} levels deep; refused")
        return data

    return _parse_file(path, parse, "JSON", (ValueError,))


def save_yaml(path: str | Path, obj: Any) -> None:
    write_bytes_atomic(path, yaml.safe_dump(obj, sort_keys=False).encode())


YAML_NODES = 100_000  # values a YAML file may expand to: a config has hundreds; a "billion laughs" has billions


def check_yaml_size(text: str, where: str, limit: int = YAML_NODES) -> None:
    """Refuse YAML whose aliases expand it beyond `limit` values, or nested too deeply, before it is
    loaded: composing keeps an alias as a reference to its node, so this costs the text's size, where
    loading a "billion laughs" would take minutes and gigabytes."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # not valid YAML: the loader says why
    except RecursionError:
        raise NndiffError(f"{where}: YAML nested too deeply") from None
    sizes: dict[int, int] = {}

    def size(node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a node that contains itself counts once
            children = node.value if isinstance(node.value, list) else []
            parts = [part for child in children for part in (child if isinstance(child, tuple) else (child,))]
            total = 1 + sum(size(part) for part in parts)
            sizes[id(node)] = total
            if total > limit:
                raise NndiffError(f"{where}: YAML expands to more than {limit:,} values (aliases); refused")
        return sizes[id(node)]

    try:
        if root is not None:
            size(root)
    except RecursionError:
        raise NndiffError(f"{where}: YAML nested too deeply") from None


def load_yaml(path: str | Path) -> Any:
    def parse(text: str) -> Any:
        check_yaml_size(text, str(path))
        return yaml.safe_load(text)

    return _parse_file(path, parse, "YAML", (yaml.YAMLError,))


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def recover_directory(final: Path) -> None:
    """Undo what a crash inside exchange()'s two-rename fallback can leave: DIR moved aside
    to DIR.old. The old one goes back in place; a stale copy beside a complete one goes."""
    old = _old(final)
    if old.exists() and not final.exists():
        old.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE). Elsewhere, two renames: a
    reader may then briefly find `b` missing, never half-written."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        errno = ctypes.get_errno()
        if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot exchange
            raise OSError(errno, os.strerror(errno), str(b))
    old = _old(b)
    shutil.rmtree(old, ignore_errors=True)
    b.rename(old)
    a.rename(b)
    old.rename(a)


def write_directory(final: str | Path, fill: Callable[[Path], Any]) -> Path:
    """A directory written whole: `fill` writes into DIR/.NAME.tmp, which then takes the place of
    `final` (replace_directory). If `fill` fails, the temporary directory goes and `final` stands."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp")
    recover_directory(final)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        fill(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, final)
    return final


def replace_directory(new: Path, final: Path) -> None:
    """`new` (a complete directory) takes the place of `final` in one atomic exchange, so a reader
    finds either the old directory whole or the new one whole; the old one is then removed."""
    if final.exists():
        exchange(new, final)  # `new` now holds the old directory
        shutil.rmtree(new, ignore_errors=True)
    else:
        new.rename(final)


def make_directory(directory: str | Path) -> Path:
    """Create an output directory (and its parents), or say in one line why it cannot be one."""
    d = Path(directory)
    for p in (d, *d.parents):
        if p.exists() and not p.is_dir():
            raise NndiffError(f"{p} is a file, not a directory; choose another output directory")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NndiffError(f"cannot create the directory {d} ({e.strerror})") from None
    return d


class DirectoryLock:
    """An exclusive lock on a directory (filelock on DIR/.nndiff.lock), so two nndiff processes
    never write the same run. The operating system releases it when the process exits, even by
    SIGKILL, so a crash never leaves a stale lock behind. Re-entrant: a stage may call another on
    the same directory.
    """

    _locks: dict[Path, Any] = {}  # one per directory in this process, counting its nesting

    def __init__(self, directory: str | Path):
        self.path = (Path(directory) / ".nndiff.lock").absolute()

    def __enter__(self) -> DirectoryLock:
        import filelock

        make_directory(self.path.parent)
        lock = self._locks.setdefault(self.path, filelock.FileLock(self.path, timeout=0))
        try:
            lock.acquire()
        except filelock.Timeout:
            raise NndiffError(
                f"{self.path.parent} is in use by another nndiff process; "
                "wait for it to finish or use another directory"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self._locks[self.path].release()
