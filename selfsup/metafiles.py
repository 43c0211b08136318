"""Typed readers of the metadata files selfsup reads back, and the checks every writer makes on its output path.

**Readers.** Every metadata file the project reads (an eval JSON, a shard folder's ``selfsup.json``, a mask-cache
fingerprint, a subset file, a snapshot, ``train_log.csv``, ``config.yaml``) is read through :func:`read_json`,
:func:`read_yaml_mapping` or :func:`read_csv_log`, and its fields through :class:`Fields`. A file that cannot be read,
is not the shape it should be, or has a field of the wrong type raises one :class:`~selfsup.errors.DataError` line that
names the file and the field: never a ``KeyError`` or ``TypeError`` from deep inside a command.

**Writers.** :func:`check_output_file` and :func:`make_output_dir` refuse, before any work, an output path that is the
wrong kind or cannot be written. :func:`claim_output_dir` lets a writer replace a folder only when the folder holds
nothing but what that writer wrote itself, recognised by its own marker file, and refuses a folder that is, contains
or sits inside a source folder. :class:`RunLock` keeps two processes from writing one run folder at once.

This module is in the lowest layer: every layer may use it.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Type, Union, overload

from selfsup.errors import ConfigError, DataError

__all__ = ["Fields", "read_json", "read_yaml_mapping", "read_csv_log", "check_output_file", "make_output_dir",
           "claim_output_dir", "same_or_nested", "RunLock"]

PathLike = Union[str, os.PathLike]

#: the largest metadata file read whole (a train_log.csv of a very long run is far below this)
MAX_METADATA_BYTES = 256 * 1024 * 1024
#: the longest single CSV field accepted (a run log's fields are numbers)
MAX_CSV_FIELD = 4096

_TYPE_NAMES = {dict: "a mapping", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    for t, name in ((dict, "a mapping"), (list, "a list"), (str, "a string"), (int, "an integer"),
                    (float, "a number")):
        if isinstance(value, t):
            return name
    return "null" if value is None else type(value).__name__


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        if not path.is_file():
            raise DataError(f"{path}: {what} is missing or not a regular file")
        if path.stat().st_size > MAX_METADATA_BYTES:
            raise DataError(f"{path}: {what} is larger than {MAX_METADATA_BYTES >> 20} MB")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None


def _text(path: Path, what: str) -> str:
    data = _read_bytes(path, what)
    if b"\x00" in data:
        raise DataError(f"{path}: {what} is binary, not text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: {what} is not UTF-8 text") from None


class Fields:
    """Typed access to a mapping read from ``path``: each getter checks the type and names file and field on error.

    ``Fields(obj, path, what)`` raises at once if ``obj`` is not a mapping. Getters take the key, an optional default
    (absent keys then return it; without one an absent key is an error) and bounds for numbers.
    """

    _MISSING = object()

    def __init__(self, obj: Any, path: PathLike, what: str = "the file", prefix: str = ""):
        self.path, self.what, self.prefix = Path(path), what, prefix
        if not isinstance(obj, dict):
            raise DataError(f"{self.path}: {what} {('field ' + prefix.rstrip('.') + ' ') if prefix else ''}"
                            f"must be a mapping, not {_kind(obj)}")
        self.obj = obj

    def error(self, key: str, problem: str) -> DataError:
        return DataError(f"{self.path}: field {self.prefix}{key} {problem}")

    def _get(self, key: str, default: Any) -> Any:
        if key not in self.obj:
            if default is Fields._MISSING:
                raise self.error(key, "is missing")
            return default
        return self.obj[key]

    def has(self, key: str) -> bool:
        return key in self.obj

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        return self._get(key, default)

    def number(self, key: str, default: Any = _MISSING, *, lo: Optional[float] = None, hi: Optional[float] = None,
               finite: bool = True, allow_none: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and default is not Fields._MISSING:
            return value
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, not {_kind(value)} ({str(value)[:40]!r})")
        if finite and not math.isfinite(value):
            raise self.error(key, f"must be finite, not {value}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.error(key, f"must be in [{lo if lo is not None else '-inf'}, "
                                  f"{hi if hi is not None else 'inf'}], not {value}")
        return value

    def integer(self, key: str, default: Any = _MISSING, *, lo: Optional[int] = None,
                hi: Optional[int] = None) -> Any:
        value = self._get(key, default)
        if value is default and default is not Fields._MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_kind(value)} ({str(value)[:40]!r})")
        return self.number(key, lo=lo, hi=hi)

    def string(self, key: str, default: Any = _MISSING, *, allow_none: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and default is not Fields._MISSING:
            return value
        if value is None and allow_none:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_kind(value)}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and default is not Fields._MISSING:
            return value
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {_kind(value)}")
        return value

    def list(self, key: str, default: Any = _MISSING, *, of: Optional[Union[Type, Tuple[Type, ...]]] = None,
             allow_none: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and default is not Fields._MISSING:
            return value
        if value is None and allow_none:
            return None
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, not {_kind(value)}")
        if of is not None:
            for i, item in enumerate(value):
                types = of if isinstance(of, tuple) else (of,)
                if (isinstance(item, bool) and bool not in types) or not isinstance(item, types):
                    wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
                    raise self.error(f"{key}[{i}]", f"must be {wanted}, not {_kind(item)}")
        return value

    @overload
    def mapping(self, key: str) -> "Fields": ...

    @overload
    def mapping(self, key: str, default: Any = _MISSING, *, allow_none: bool = False) -> Optional["Fields"]: ...

    def mapping(self, key: str, default: Any = _MISSING, *, allow_none: bool = False) -> Optional["Fields"]:
        """A nested mapping as :class:`Fields` (``None`` when absent with ``default=None`` or null with
        ``allow_none``)."""
        value = self._get(key, default)
        if value is None and (allow_none or default is None):
            return None
        if value is default and default is not Fields._MISSING:
            return value
        return Fields(value, self.path, self.what, prefix=f"{self.prefix}{key}.")


def read_json(path: PathLike, what: str, *, kind: Type = dict) -> Any:
    """The JSON value of ``path``, which must be of ``kind`` (``dict`` or ``list``); one line naming the file
    otherwise (missing, unreadable, binary, not JSON, or the wrong shape). NaN and Infinity are refused."""
    path = Path(path)
    text = _text(path, what)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise DataError(f"{path}: {what} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(value, kind):
        raise DataError(f"{path}: {what} must be {_TYPE_NAMES.get(kind, kind.__name__)}, not {_kind(value)}")
    return value


def read_yaml_mapping(path: PathLike, what: str, *, sections: Sequence[str] = ()) -> Dict[str, Any]:
    """The YAML mapping in ``path`` (an empty file is ``{}``); each name in ``sections``, when present, must itself
    be a mapping (``config.yaml``'s ``data:``, ``train:`` ...). One line naming file and field otherwise."""
    import yaml

    path = Path(path)
    text = _text(path, what)
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise DataError(f"{path}: {what} is not valid YAML ({str(exc).splitlines()[0][:120]})") from None
    if value is None:
        return {}
    fields = Fields(value, path, what)
    for name in sections:
        if fields.has(name) and fields.raw(name) is not None:
            fields.mapping(name)
    return value


def read_csv_log(path: PathLike, what: str, *, numeric: Iterable[str] = (), required: Iterable[str] = ()) \
        -> List[Dict[str, str]]:
    """The rows of a CSV log with a header (``train_log.csv``): text, no field over :data:`MAX_CSV_FIELD` characters,
    each column of ``required`` in the header, and each non-empty cell of ``numeric`` a finite-or-nan number. One line
    naming the file, the row and the column otherwise. Cells stay strings (``float(cell)`` is safe after this)."""
    path = Path(path)
    text = _text(path, what)
    old = csv.field_size_limit()
    csv.field_size_limit(MAX_CSV_FIELD)
    try:
        reader = csv.DictReader(text.splitlines())
        rows = []
        for row in reader:
            rows.append(row)
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise DataError(f"{path}: {what} is not a readable CSV log (line {reader.line_num}: {exc})") from None
    finally:
        csv.field_size_limit(old)
    missing = [c for c in required if c not in header]
    if rows and missing:
        raise DataError(f"{path}: {what} has no column {missing[0]!r}")
    numeric = [c for c in numeric if c in header]
    for i, row in enumerate(rows):
        if None in row:  # more cells than the header names
            raise DataError(f"{path}: {what} row {i + 2} has more cells than the header")
        for c in numeric:
            cell = row.get(c)
            if cell in ("", None):
                continue
            try:
                float(cell)
            except ValueError:
                raise DataError(f"{path}: {what} row {i + 2}, column {c!r}: {cell[:40]!r} is not a number") from None
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Output paths
# --------------------------------------------------------------------------------------------------------------------

def check_output_file(path: PathLike, option: str = "--out") -> Path:
    """Refuse, before any work is done, an output file path that is a folder, whose folder is a file or cannot be
    created, or that cannot be written. Creates the parent folder. Returns the path."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name (e.g. {path / 'result.json'})")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: the file is not writable")
    make_output_dir(path.parent, f"{option} {path}: its folder")
    return path


def make_output_dir(path: PathLike, option: str) -> Path:
    """Create the output folder ``path`` (named ``option`` in messages, e.g. ``out=``) with its parents; a path that is
    a file, sits under a file, cannot be created or cannot be written is a one-line
    :class:`~selfsup.errors.ConfigError` before any work is done."""
    path = Path(path).expanduser()
    sep = "" if option.endswith(("=", " ")) else " "
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}{sep}{path} is a file, not a folder")
    for p in path.parents:
        if p.exists():
            if not p.is_dir():
                raise ConfigError(f"{option}{sep}{path} cannot be created: {p} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option}{sep}{path} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option}{sep}{path} is not writable")
    return path


def same_or_nested(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` (resolved, symlinks followed) are the same folder or one contains the other."""
    ra, rb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents


def claim_output_dir(path: PathLike, option: str, *, marker: str, owned: Any = None,
                     sources: Sequence[PathLike] = ()) -> Path:
    """Check that the writer may (re)write the folder ``path`` before any work is done.

    Refused in one line: a ``path`` that is, contains or sits inside one of ``sources`` (the inputs the writer reads);
    and an existing non-empty ``path`` that does not hold the writer's own ``marker`` file (its metadata, e.g. a shard
    split's ``selfsup.json``) or whose marker ``owned(marker_path)`` does not accept. A missing or empty folder is
    fine. The folder itself is not created (the writer writes beside it and renames)."""
    path = Path(path).expanduser()
    sep = "" if option.endswith(("=", " ")) else " "
    for src in sources:
        if src is not None and Path(src).expanduser().exists() and same_or_nested(path, src):
            raise ConfigError(f"{option}{sep}{path} is, contains or sits inside the source {src}; "
                              f"write somewhere else")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{option}{sep}{path} exists and is not a folder; refusing to replace it")
    if path.is_dir():
        try:
            entries = list(os.scandir(path))
        except OSError as exc:
            raise ConfigError(f"{option}{sep}{path} cannot be read: {exc.strerror or exc}") from None
        if entries:
            mark = path / marker
            ok = mark.is_file() and not mark.is_symlink()
            if ok and owned is not None:
                try:
                    ok = bool(owned(mark))
                except Exception:  # noqa: BLE001 - any unreadable marker means "not ours"
                    ok = False
            if not ok:
                raise ConfigError(f"{option}{sep}{path} already holds files that selfsup did not write "
                                  f"(no {marker} of its own); refusing to replace it: choose an empty or new folder")
    return path


class RunLock:
    """An exclusive lock on a run folder (``<dir>/.selfsup.lock``, ``fcntl.flock``): a second process that wants the
    same folder gets one line instead of writing beside the first. The lock dies with its process (kill -9 included),
    so a stale lock file never blocks a later run."""

    def __init__(self, directory: PathLike, what: str = "run folder"):
        self.directory, self.what = Path(directory), what
        self.path = self.directory / ".selfsup.lock"
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot lock the {self.what} {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ConfigError(f"another selfsup process is writing the {self.what} {self.directory}; wait for "
                                  f"it to finish or stop it first") from None
            raise ConfigError(f"cannot lock the {self.what} {self.directory}: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
