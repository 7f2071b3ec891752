"""Atomic writes, and the lock that keeps two runs off one output folder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lambdaimages.errors import OutputError

TMP_PREFIX = ".tmp-"


class AtomicWrite:
    """A temp file in the folder of `path`: `commit()` renames it over `path`, `discard()` removes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        _mkdir(self.path.parent)
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=self.path.parent)
        except OSError as exc:
            raise OutputError(f"cannot write in {self.path.parent}: {exc.strerror}") from exc
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise OutputError(f"cannot write {self.path}: {exc.strerror}") from exc
            raise

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        _unlink(self.tmp)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write to a temp file in the same folder; rename over `path` only if the block succeeds."""
    write = AtomicWrite(path)
    try:
        yield write.file
    except BaseException:
        write.discard()
        raise
    write.commit()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace `path` atomically when its content differs; return whether it was written."""
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    with atomic_file(path) as f:
        f.write(data)
    return True


def link_or_copy(source: Path, dest: Path) -> None:
    """Make `dest` the same file as `source` (a hard link, a copy across devices), atomically."""
    dest = Path(dest)
    with contextlib.suppress(FileNotFoundError):
        if os.path.samefile(source, dest):
            return
    _mkdir(dest.parent)
    tmp = dest.parent / f"{TMP_PREFIX}{dest.name}.{os.getpid()}"
    _unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:
        with open(source, "rb") as src, atomic_file(dest) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        return
    os.replace(tmp, dest)


def remove_temps(folder: Path) -> int:
    """Remove what an interrupted run left behind in one folder and below it; return how many files.

    Only safe while holding the folder's lock (hold_output): then no temp file is still being written.
    """
    removed = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if name.startswith(TMP_PREFIX):
                _unlink(os.path.join(root, name))
                removed += 1
    return removed


@contextlib.contextmanager
def locked(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive advisory lock on `path` (created if needed), released on exit or process death.

    Yields whether the lock is held: always with `wait`, else False when someone else holds it.
    """
    _mkdir(Path(path).parent)
    with open(path, "a+b") as f:
        flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
        try:
            fcntl.flock(f, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _mkdir(folder: Path) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create folder {folder}: {exc.strerror}") from exc


def _unlink(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def hold_output(out: Path):
    """Create the output folder and hold its lock for the life of the process.

    A second run on the same folder is refused at once, naming the process that holds it. Temp
    files a killed run left anywhere below the folder are removed once the lock is held. The lock
    file is opened, never written: a rerun that changes nothing leaves every file under `out` as it was
    (the holder's pid comes from the kernel's lock table instead).
    """
    out = Path(out)
    _mkdir(out)
    path = out / ".lock"
    try:
        f = open(path, "a+")
    except OSError as exc:
        raise OutputError(f"cannot write in output folder {out}: {exc.strerror}") from exc
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _flock_holder(os.fstat(f.fileno())) or "another process"
        f.close()
        raise OutputError(
            f"output folder {out} is in use by another doit run (pid {holder}); try again when it ends"
        ) from None
    remove_temps(out)
    return f


def _flock_holder(stat: os.stat_result) -> str | None:
    """The pid holding a flock() on the file of `stat`, from Linux's /proc/locks; None when unknown."""
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            for line in table:
                fields = line.split()  # 1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF
                if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return fields[4]
    except OSError:
        pass
    return None
