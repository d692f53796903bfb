"""Files on disk, one way: atomic replaces, locked JSON edits, file stamps, sparse extents.

The durability policy (writers of CODEX_HOME state follow it by calling this module, not by copying it):

    Every replace writes a temporary file next to the target (same directory, so the same
    filesystem; named ``.<name>.<pid>.<random>.tmp``), flushes and fsyncs it, ``os.replace()``s it
    over the target, then fsyncs the directory. A reader sees the old file or the new one, never
    a torn one; after a crash the new file is either fully there or not at all. A failed write
    removes its temporary file and leaves the target untouched. New files get the process's
    umask (``mode`` sets exact permissions, e.g. 0o600 for key hashes).

The directory fsync is best effort: a filesystem that cannot fsync a directory is accepted.

- :func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`write_json_atomic`: the common cases;
  :func:`replace_atomically` when a library writes the file itself (parquet); :func:`replace_all`
  for files that belong together (all written before the first replace); :func:`move_into_place`
  for a finished file from elsewhere (a restore's staging area).
- :func:`file_lock` / :func:`locked_edit`: read-modify-write of a JSON file by several processes.
- :func:`stamp` and :class:`ReloadingFile`: "re-read when the file changed" caches. A stamp is
  (inode, mtime_ns, size): an atomic replace always changes the inode, so a stamp never misses one.
- :func:`data_extents`, :func:`copy_tree_sparse`: files with holes (qdrant-edge preallocates sparse
  mmaps) copied and archived without writing the holes out; :func:`file_manifest`: sizes and sha256s.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# --------------------------------------------------------------------------- atomic replaces


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def fsync_file(path: Path) -> None:
    """Flush a finished file's data to disk (a file some library wrote and closed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the renames and new names in ``path`` durable (best effort: some filesystems cannot)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _stage(path: Path, write: Callable[[Path], None], mode: int | None) -> Path:
    """Write ``path``'s temporary sibling (fsynced, with ``mode``); removed again if anything fails."""
    tmp = _temp_path(path)
    try:
        write(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def replace_atomically(path: Path, write: Callable[[Path], None], *, mode: int | None = None) -> None:
    """Replace ``path`` with what ``write(tmp)`` writes to the temporary path it is given."""
    replace_all({path: write}, mode=mode)


def replace_all(writes: Mapping[Path, Callable[[Path], None]], *, mode: int | None = None) -> None:
    """Replace several files (in the mapping's order) after all of them were written: a failed
    write replaces none of them. Each file is atomic on its own; readers that need the set to be
    consistent key on the file replaced last."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path in writes:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        for path, write in writes.items():
            staged.append((_stage(Path(path), write, mode), Path(path)))
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for directory in dict.fromkeys(Path(p).parent for p in writes):
        fsync_dir(directory)


def _write_new(tmp: Path, data: bytes) -> None:
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), "wb") as fh:
        fh.write(data)


def write_bytes_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    replace_atomically(path, lambda tmp: _write_new(tmp, data), mode=mode)


def write_text_atomic(path: Path, text: str, *, mode: int | None = None) -> None:
    write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def write_json_atomic(
    path: Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = True, mode: int | None = None
) -> None:
    """``json.dumps(obj, indent=indent, sort_keys=sort_keys)``, replaced atomically. Callers pass
    the formatting their file has always had (files are compared and hashed byte for byte)."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys), mode=mode)


def move_into_place(src: Path, dst: Path) -> None:
    """Put the finished file ``src`` at ``dst`` atomically: a rename on one filesystem, a copy to a
    temporary sibling of ``dst`` and a rename across filesystems. ``src`` is gone afterwards."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        replace_atomically(dst, lambda tmp: shutil.copy2(src, tmp))
        Path(src).unlink()
        return
    fsync_dir(dst.parent)


# --------------------------------------------------------------------------- locks


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock_path`` (created when absent, never removed), held until the
    block ends. Blocks without a timeout; threads of one process exclude each other too."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def locked_edit(
    path: Path,
    default: Callable[[], Any] = dict,
    *,
    indent: int | None = 2,
    sort_keys: bool = True,
    mode: int | None = None,
) -> Iterator[Any]:
    """Read-modify-write of the JSON file ``path`` under :func:`file_lock` on ``path.with_suffix(".lock")``.

    Yields the parsed file (``default()`` when it does not exist yet); the object as the block left
    it is written back with :func:`write_json_atomic`. An exception in the block writes nothing.
    """
    with file_lock(path.with_suffix(".lock")):
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            data = default()
        yield data
        write_json_atomic(path, data, indent=indent, sort_keys=sort_keys, mode=mode)


# --------------------------------------------------------------------------- stamps

FileStamp = tuple[int, int, int]  # (st_ino, st_mtime_ns, st_size)


def stamp_of(st: os.stat_result) -> FileStamp:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def stamp(path: Path) -> FileStamp | None:
    """The file's (inode, mtime_ns, size); None when it does not exist. Changes with every atomic
    replace (new inode) and with every in-place edit that moves the mtime or the size."""
    try:
        return stamp_of(os.stat(path))
    except FileNotFoundError:
        return None


_UNREAD: Any = object()


class ReloadingFile(Generic[T]):
    """``load(path)`` of one file, cached until the file's :func:`stamp` changes: one ``stat`` per
    :meth:`get` while nothing changed. ``missing`` is the value while the file does not exist.

    The stamp is taken before the file is read, so a change during the read is seen by the next
    ``get``. A ``load`` that raises caches nothing (the next ``get`` tries again).
    """

    def __init__(self, path: Path, load: Callable[[Path], T], missing: T):
        self.path = Path(path)
        self._load = load
        self._missing = missing
        self._lock = threading.Lock()
        self._held: tuple[Any, T] = (_UNREAD, missing)

    def get(self) -> T:
        current = stamp(self.path)
        held_stamp, value = self._held
        if current == held_stamp:
            return value
        with self._lock:
            held_stamp, value = self._held
            if current != held_stamp:
                try:
                    value = self._missing if current is None else self._load(self.path)
                except FileNotFoundError:  # removed between the stat and the read
                    current, value = None, self._missing
                self._held = (current, value)
        return value


# --------------------------------------------------------------------------- sparse files


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data regions of the first ``size`` bytes of a file; one region
    covering everything when the filesystem cannot find holes (no ``SEEK_DATA``)."""
    extents: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                break
            return [(0, size)]
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        extents.append((start, end - start))
        pos = end
    return extents


def copy_file_sparse(src: Path, dst: Path) -> None:
    """Copy only the data extents of ``src``: qdrant-edge preallocates its files as sparse 32 MB
    mmaps, so a small shard is mostly holes that a plain copy would write out as zeros."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fd_in, fd_out = fin.fileno(), fout.fileno()
        size = os.fstat(fd_in).st_size
        fout.truncate(size)
        for start, length in data_extents(fd_in, size):
            end = start + length
            while start < end:
                try:
                    done = os.copy_file_range(fd_in, fd_out, end - start, start, start)
                except OSError:
                    done = os.pwrite(fd_out, os.pread(fd_in, min(end - start, 1 << 20), start), start)
                if done <= 0:
                    raise OSError(f"short copy of {src} at offset {start}")
                start += done
    shutil.copystat(src, dst)


def copy_tree_sparse(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, copy_function=lambda s, d: copy_file_sparse(Path(s), Path(d)))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_manifest(directory: Path) -> dict[str, list[Any]]:
    """``{relative path: [size, sha256]}`` of every file under ``directory``."""
    return {
        p.relative_to(directory).as_posix(): [p.stat().st_size, _sha256_file(p)]
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
