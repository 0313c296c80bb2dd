"""Reading what a user gives (model, target and grid files) with a byte limit, and
checking an allocation's size before it is made.

One limit, `max_bytes()`: EDGELSTM_MAX_BYTES in the environment (bytes; `2e9`, `4GiB`
and `512MB` are accepted), else 1 GiB. It bounds a file read whole, a member
of a .keras archive, an HDF5 or ONNX tensor, and the weights `LSTMWeights.random`
draws. Functions that allocate also take `max_bytes=` to override it per call.

Errors name the file's full path, the size and the limit. Only regular files are
read: /dev/zero, a FIFO or a directory is refused before anything is read from it.
"""
from __future__ import annotations

import os
import re
import stat
from typing import Optional, Type

MAX_BYTES_ENV = "EDGELSTM_MAX_BYTES"
DEFAULT_MAX_BYTES = 2**30
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


class SizeLimitError(ValueError):
    """Something would take more bytes than the limit allows (the message says how to raise it)."""


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(text)
    n = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if not 1 <= n < 2**63:
        raise ValueError(text)
    return int(n)


def max_bytes(override: Optional[int] = None) -> int:
    """The byte limit: `override` if given, else $EDGELSTM_MAX_BYTES, else 1 GiB."""
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise ValueError(f"max_bytes: expected an integer >= 1, got {override!r}")
        return override
    env = os.environ.get(MAX_BYTES_ENV)
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        return _parse_bytes(env)
    except ValueError:
        raise ValueError(f"{MAX_BYTES_ENV}: expected a number of bytes (e.g. 4000000000 or 4GiB), "
                         f"got {env!r}") from None


def human_bytes(n: int) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} bytes"


def limit_message(what: str, nbytes: int, limit: int, overridable: bool = True) -> str:
    how = (f"set {MAX_BYTES_ENV} (or max_bytes=) to allow more" if overridable else
           "a fixed limit for this kind of file")
    return (f"{what} needs {human_bytes(nbytes)} ({nbytes:,} bytes), above the limit of "
            f"{human_bytes(limit)} ({limit:,} bytes); {how}")


def check_bytes(nbytes: int, what: str, limit: Optional[int] = None,
                error: Type[Exception] = SizeLimitError) -> int:
    """Raise `error` naming `what`, the size and the limit if nbytes is above the limit."""
    limit = max_bytes(limit)
    if nbytes > limit:
        raise error(limit_message(what, nbytes, limit))
    return nbytes


def read_bytes(path, what: str = "file", limit: Optional[int] = None,
               error: Type[Exception] = ValueError, fixed_limit: bool = False) -> bytes:
    """The bytes of a regular file, at most `limit` of them (else `error`).

    Opened without blocking (a FIFO does not hang) and checked with fstat before a byte
    is read: character devices (/dev/zero), FIFOs, sockets and directories are refused."""
    full = os.path.abspath(os.fspath(path))
    limit = max_bytes(limit)
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{full}: no such {what}") from None
    except IsADirectoryError:
        raise error(f"{full}: is a directory, expected a {what}") from None
    except OSError as e:
        raise error(f"{full}: cannot read the {what} ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a device" if
                    stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a FIFO" if
                    stat.S_ISFIFO(st.st_mode) else "not a regular file")
            raise error(f"{full}: is {kind}, expected a {what} (a regular file)")
        if st.st_size > limit:
            raise error(limit_message(f"{full}: the {what}", st.st_size, limit, not fixed_limit))
        chunks, total = [], 0
        while True:
            try:
                b = os.read(fd, min(1 << 20, limit + 1 - total))
            except OSError as e:
                raise error(f"{full}: cannot read the {what} ({e.strerror})") from None
            if not b:
                break
            chunks.append(b)
            total += len(b)
            if total > limit:     # the file grew while read
                raise error(limit_message(f"{full}: the {what}", total, limit, not fixed_limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path, what: str = "file", limit: Optional[int] = None,
              error: Type[Exception] = ValueError, fixed_limit: bool = False) -> str:
    """read_bytes decoded as UTF-8; a bad byte is reported with the file and its offset."""
    data = read_bytes(path, what, limit, error, fixed_limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        full = os.path.abspath(os.fspath(path))
        raise error(f"{full}: the {what} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


def check_writable(path, what: str = "output", error: Type[Exception] = ValueError, is_dir: bool = False) -> None:
    """Fail now, not after a long run, if `path` (a file, or a directory with is_dir) cannot
    be written: its directory is created if missing (as the writer would) and a probe file
    is created in it and removed (permission bits alone say nothing for root, or on a
    read-only mount)."""
    import tempfile
    full = os.path.abspath(os.fspath(path))
    folder = full if is_dir else os.path.dirname(full)
    if not is_dir and os.path.isdir(full):
        raise error(f"{full}: the {what} is a directory, expected a file path")
    if not is_dir and os.path.exists(full) and not os.path.isfile(full):
        raise error(f"{full}: the {what} exists and is not a regular file (a device or a FIFO?)")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        where = "" if is_dir else f"'s folder {folder}"
        raise error(f"{full}: cannot create the {what}{where} ({e.strerror})") from None
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".edgelstm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise error(f"{full}: cannot write the {what} in {folder} ({e.strerror})") from None
    if not is_dir and os.path.exists(full) and not os.access(full, os.W_OK):
        raise error(f"{full}: the {what} exists and is not writable")


def read_toml(path, what: str, limit: int, error: Type[Exception] = ValueError) -> dict:
    """A TOML file read through read_text (bounded, regular files only) and parsed; a missing
    file, bad bytes and bad TOML are `error`s naming the file's full path."""
    from .costmodel._toml import tomllib
    full = os.path.abspath(os.fspath(path))
    try:
        text = read_text(full, what, limit, error=error, fixed_limit=True)
    except FileNotFoundError:
        raise error(f"{full}: no such {what}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"{full}: not valid TOML ({e})") from None
