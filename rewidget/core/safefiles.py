"""Files in and out, safely: safetensors reads that never unpickle, atomic writes, size limits.

    tensors, meta = read_safetensors("C_main_6.safetensors")
    atomic_write("edit.json", lambda tmp: tmp.write_text(text))      # all of it, or nothing
    atomic_write("w.safetensors", lambda tmp: save_file(state, str(tmp)))
    raw = read_limited("edit.json", max_bytes=64 << 20, what="request file")
    path = user_path("~/edits/edit.json")                            # ~ expanded

An atomic write goes to a unique temporary file in the target's folder (so two processes
writing the same name never share one), is fsynced, and is renamed over the target: a full
disk or a crash leaves the old file as it was, never a truncated one. Failures raise
RewriteError naming the path and the fix.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .errors import RewriteError


def user_path(path: str | os.PathLike, what: str = "path") -> Path:
    """``path`` as a Path with ``~`` expanded; refuses non-paths, empty strings and NUL bytes."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path.strip() or "\x00" in path:
        raise RewriteError(f"The {what} {path!r} is not a file path.",
                           "pass a path such as 'edits/edit.json' (a str or pathlib.Path).")
    try:
        return Path(path).expanduser()
    except RuntimeError as e:  # "~nosuchuser/..."
        raise RewriteError(f"The {what} {path!r} cannot be expanded ({e}).",
                           "use an absolute path or ~/... for your own home folder.") from e


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], object],
                 what: str = "file") -> Path:
    """Write ``path`` all or nothing: ``write_fn(tmp)`` writes the whole file to a unique
    temporary path in the same folder, which is fsynced and renamed over ``path``.

    A missing or read-only folder, a folder given as the file, a full disk or any error in
    ``write_fn`` raises RewriteError (OSError and SafetensorError included) and leaves an
    existing ``path`` untouched and no temporary file behind.
    """
    path = user_path(path, what)
    folder = path.parent
    if path.is_dir():
        raise RewriteError(f"The {what} path {path} is a folder.",
                           "give a file name inside it, e.g. " f"{path / 'out'}.")
    if not folder.is_dir():
        raise RewriteError(f"Cannot write the {what} {path}: the folder {folder} does not exist.",
                           "create the folder first, or choose an existing one.")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise RewriteError(f"Cannot write the {what} {path} ({e.strerror or e}).",
                           "choose a folder you can write to.") from e
    tmp = Path(tmp_name)
    try:
        os.close(fd)
        write_fn(tmp)
        mode = (path.stat().st_mode & 0o777) if path.exists() else (0o666 & ~_umask())
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or e
        raise RewriteError(f"Writing the {what} {path} failed ({reason}); an existing file there "
                           "is unchanged.", "free disk space or choose another folder, then "
                           "try again.") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(folder)
    return path


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every OS or file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_limited(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of ``path``, refusing folders, unreadable files and files over ``max_bytes``."""
    path = user_path(path, what)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise RewriteError(f"The {what} {path} is a folder.", f"pass the {what} itself.")
        if size > max_bytes:
            raise RewriteError(f"The {what} {path} is {size:,} bytes; at most {max_bytes:,} "
                               "are read.", f"check that it is a {what}.")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise RewriteError(f"Cannot read the {what} {path} ({e.strerror or e}).",
                           "check the path and its permissions.") from e
    if len(data) > max_bytes:  # grew while being read
        raise RewriteError(f"The {what} {path} is over {max_bytes:,} bytes.",
                           f"check that it is a {what}.")
    return data


def read_safetensors(path: str | Path, max_bytes: int | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, in one open (never unpickles).

    Raises SafetensorError or OSError for unreadable files, and RewriteError (a ValueError)
    for a folder or, with ``max_bytes``, a larger file."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RewriteError(f"{path} is a folder, not a safetensors file.",
                           "pass the .safetensors file itself.")
    if max_bytes is not None and path.stat().st_size > max_bytes:
        raise RewriteError(f"{path} is {path.stat().st_size:,} bytes; at most {max_bytes:,} "
                           "are read.", "check that it is the file you meant.")
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The tensor's raw bytes in memory order, for any dtype (numpy has no bfloat16): the same
    bytes as ``t.numpy().tobytes()`` where numpy has the dtype, so checksums stay as they were."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
