"""Where the files beside the events live: a local folder or any fsspec URL.

Everything the project keeps beside TensorBoard's event files (thumbnails, their
checksums, the resume state) is written and read through this module, and so are the
event files that ``read_log``, ``scores`` and ``export`` read. Local paths use the
operating system directly; any other path is an fsspec URL (``s3://``, ``gs://``,
``memory://``, ...) handled by the fsspec backend installed for its protocol
(``s3fs``, ``gcsfs``; ``pip install 'deephys-lightning[s3]'``).

Writes are complete or absent on local disks and shared file systems (a temporary
name and a rename) and on object stores (S3, GCS, Azure: one object per write, which
appears whole or not at all); protocols that write in place (ftp, sftp, webdav)
write in place.

Reads have a deadline: each runs on a small pool of reader threads, and one that
has not answered within :func:`read_timeout` seconds (``DEEPHYS_READ_TIMEOUT_S``,
default 60) raises :class:`ReadTimeout` in the caller, whose thread is free again
(a TensorBoard request answers 504, the command line says so in one line). A local
path that is not a regular file (a FIFO, a device) is refused at once.

Example::

    notes = storage.join("s3://bucket/exp/version_0", "notes", "a.txt")
    storage.write_bytes(notes, b"seen")
    storage.read_bytes(notes)                 # b"seen"
    storage.read_range(notes, 1, 2)           # b"ee"
    storage.write_stream(notes, lambda f: f.write(b"seen again"))  # large files
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.util
import io
import os
import posixpath
import stat
import threading
import uuid
from collections.abc import Callable
from typing import IO, Any, TypeVar

TMP_SUFFIX = ".tmp"  # an interrupted local write leaves <name>.<pid>-<random>.tmp

# The package that serves each common protocol, for the error that says what to install.
_BACKENDS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
}


class MissingBackendError(ImportError):
    """No fsspec backend is installed for a URL's protocol (the message says which)."""


class StorageError(OSError):
    """A store failed in a way its backend does not report as an ``OSError`` (an
    endpoint that cannot be reached, refused credentials): said as one, with the URL."""


class ReadTimeout(Exception):
    """A read did not answer within :func:`read_timeout` seconds. Not an ``OSError``:
    the file may be fine and the read may still end; no caller should take it for a
    missing or damaged file."""


DEFAULT_READ_TIMEOUT_S = 60.0
_READERS = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="deephys-read")
_T = TypeVar("_T")


def read_timeout() -> float:
    """Seconds a read may take: ``DEEPHYS_READ_TIMEOUT_S``, else 60."""
    try:
        return max(0.001, float(os.environ.get("DEEPHYS_READ_TIMEOUT_S", DEFAULT_READ_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_READ_TIMEOUT_S


def _with_deadline(path: str, read: Callable[[], _T]) -> _T:
    """``read()`` on a reader thread, waited for at most :func:`read_timeout` seconds.
    A read that is late stays on its thread (a blocked system call cannot be taken
    back); the caller goes on."""
    future = _READERS.submit(read)
    seconds = read_timeout()
    try:
        return future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        raise ReadTimeout(
            f"reading {path} did not end within {seconds:g} s (a stalled network mount, "
            "an unreachable store, or a pipe?); set DEEPHYS_READ_TIMEOUT_S to wait longer"
        ) from None


def _open_regular(path: str) -> int:
    """A read-only descriptor of the local regular file ``path`` (a FIFO or a device
    is refused at once, without waiting for a writer)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{path} is not a regular file")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remote(path: str, operation: Callable[[Any, str], Any]) -> Any:
    """``operation(fs, path_within_fs)`` on the URL ``path``'s filesystem, its
    failures raised as ``OSError`` (``FileNotFoundError`` kept as it is)."""
    fs, inner = filesystem(path)
    try:
        return operation(fs, inner)
    except OSError:
        raise
    except Exception as error:  # botocore's and others' own exception types
        raise StorageError(f"{path}: {type(error).__name__}: {error}") from error


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a URL with a protocol other than ``file://``."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def protocol(path: str | os.PathLike) -> str:
    """The URL's protocol (``"s3"``), or ``"file"`` for a local path."""
    text = os.fspath(path)
    return text.split("://", 1)[0] if is_url(text) else "file"


def local_path(path: str | os.PathLike) -> str:
    """A local path as the operating system takes it (``file://`` stripped)."""
    text = os.fspath(path)
    return text[len("file://") :] if text.startswith("file://") else text


def normalize(path: str | os.PathLike) -> str:
    """An absolute local path, or the URL without trailing slashes: never a local
    folder named after a URL (``os.path.abspath("s3://b")`` is ``$PWD/s3:/b``)."""
    text = os.fspath(path)
    if is_url(text):
        scheme, rest = text.split("://", 1)
        return f"{scheme}://{rest.rstrip('/')}"
    return os.path.abspath(local_path(text))


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base`` joined with ``parts`` (``/`` for URLs, the OS separator for paths)."""
    text = os.fspath(base)
    if is_url(text):
        return posixpath.join(text, *parts)
    return os.path.join(local_path(text), *parts)


# One filesystem per protocol for the whole process, for the backends that run on
# their own event loop (s3fs, gcsfs, adlfs, http, memory: safe to share between
# threads). fsspec caches its instances per thread, and TensorBoard serves each request
# on a new thread: a new S3 client per thumbnail request cost ten times its read.
_FILESYSTEMS: dict[tuple[int, str], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def forget_filesystems() -> None:
    """Drop the filesystems made so far (after their configuration, such as
    ``AWS_ENDPOINT_URL``, changed)."""
    with _FILESYSTEMS_LOCK:
        _FILESYSTEMS.clear()


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem of the URL ``path`` and the path within it.

    Raises :class:`MissingBackendError` (saying what to install) when no backend
    serves the protocol.
    """
    import fsspec

    scheme = protocol(path)
    try:
        if "::" in path:  # a chained URL (simplecache::s3://...): fsspec's own parsing
            return fsspec.core.url_to_fs(path)
        key = (os.getpid(), scheme)  # a forked process makes its own
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            fs = fsspec.filesystem(scheme)
            if getattr(fs, "async_impl", False):  # its own event loop: safe across threads
                with _FILESYSTEMS_LOCK:
                    fs = _FILESYSTEMS.setdefault(key, fs)
        return fs, fs._strip_protocol(path)
    except ImportError as error:
        package = _BACKENDS.get(scheme)
        if package and importlib.util.find_spec(package) is not None:  # there, but broken
            raise MissingBackendError(
                f"cannot open {path}: the fsspec backend for {scheme}:// failed to import "
                f"({type(error).__name__}: {error}); reinstall it with compatible versions"
            ) from None
        raise _missing_backend(path, scheme, error) from None
    except ValueError as error:  # fsspec: "Protocol not known"
        raise _missing_backend(path, scheme, error) from None


def _missing_backend(path: str, scheme: str, error: Exception) -> MissingBackendError:
    package = _BACKENDS.get(scheme)
    if package is None:
        install = f"install the fsspec backend for {scheme}://"
    else:
        extra = {"s3fs": "s3", "gcsfs": "gcs"}.get(package)
        install = f"pip install {package}" + (
            f" (or: pip install 'deephys-lightning[{extra}]')" if extra else ""
        )
    return MissingBackendError(
        f"cannot open {path}: no fsspec backend for {scheme}:// is installed ({error}); {install}"
    )


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(local_path(path))
    return _remote(path, lambda fs, inner: fs.exists(inner))


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(local_path(path))
    return _remote(path, lambda fs, inner: fs.isdir(inner))


def listdir(path: str) -> list[str]:
    """The names in the folder ``path`` (raises FileNotFoundError when there is none)."""
    if not is_url(path):
        return os.listdir(local_path(path))
    entries = _remote(path, lambda fs, inner: fs.ls(inner, detail=False, refresh=True))
    return sorted({posixpath.basename(e.rstrip("/")) for e in entries} - {""})


def identity(path: str) -> tuple:
    """What tells a file from its replacement: (inode, size, mtime) locally; size and
    ETag or modification time on object stores. Raises FileNotFoundError."""
    if not is_url(path):
        info = _with_deadline(path, lambda: os.stat(local_path(path)))
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def remote() -> tuple:
        info = _remote(path, lambda fs, inner: fs.info(inner, refresh=True))  # not a listing's
        tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
        return (None, int(info.get("size") or 0), str(tag))

    return _with_deadline(path, remote)


def open_read(path: str) -> IO[bytes]:
    """A binary file object for reading (seekable; remote ones read ahead in blocks),
    each of whose reads has the deadline of :func:`read_timeout`."""
    if not is_url(path):
        fd = _with_deadline(path, lambda: _open_regular(local_path(path)))
        return _DeadlineFile(_DeadlineReader(path, os.fdopen(fd, "rb")))
    handle = _with_deadline(path, lambda: _remote(path, _open_remote))
    return _DeadlineFile(_DeadlineReader(path, handle))


def _open_remote(fs: Any, inner: str) -> IO[bytes]:
    return fs.open(inner, "rb")


class _DeadlineReader(io.RawIOBase):
    """A read-only file whose reads and seeks have the deadline of :func:`read_timeout`."""

    def __init__(self, path: str, handle: IO[bytes]) -> None:
        super().__init__()
        self._path = path
        self._handle = handle

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return _with_deadline(self._path, lambda: self._handle.read(-1 if size is None else size))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return _with_deadline(self._path, lambda: self._handle.seek(offset, whence))

    def tell(self) -> int:
        return self._handle.tell()

    def fileno(self) -> int:
        return self._handle.fileno()

    @property
    def size(self) -> int | None:
        """The size of a remote file as opened (fsspec's files know it), else None."""
        return getattr(self._handle, "size", None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._handle.close()
        super().close()


class _DeadlineFile(io.BufferedReader):
    """A buffered :class:`_DeadlineReader` that keeps a remote file's ``size``."""

    raw: _DeadlineReader

    @property
    def size(self) -> int | None:
        return self.raw.size


def read_bytes(path: str) -> bytes:
    if not is_url(path):

        def local() -> bytes:
            fd = _open_regular(local_path(path))
            with os.fdopen(fd, "rb") as handle:
                return handle.read()

        return _with_deadline(path, local)
    return _with_deadline(path, lambda: _remote(path, lambda fs, inner: fs.cat_file(inner)))


def read_range(path: str, offset: int, length: int) -> bytes:
    """``length`` bytes from ``offset`` (fewer where the file ends): one ranged read."""
    if length <= 0:
        return b""
    if not is_url(path):

        def local() -> bytes:
            fd = _open_regular(local_path(path))
            try:
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)

        return _with_deadline(path, local)
    return _with_deadline(
        path,
        lambda: _remote(
            path, lambda fs, inner: fs.cat_file(inner, start=offset, end=offset + length)
        ),
    )


def write_bytes(path: str, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` completely or not at all (folders are made)."""
    if is_url(path):
        _remote(path, lambda fs, inner: fs.pipe_file(inner, bytes(data)))  # whole or absent
        return
    write_with(path, lambda handle: handle.write(data))


def write_with(path: str, write: Callable[[IO[bytes]], object]) -> None:
    """Let ``write`` fill the local file ``path`` through a temporary file that is
    renamed when it is complete (and removed when it is not)."""
    if is_url(path):
        raise ValueError(f"write_with streams to local files only, not {path}")
    path = local_path(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # pid and a random part: two hosts (a shared file system) or threads never collide
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: leave no half file behind
            os.remove(tmp)
        raise


def write_stream(path: str, write: Callable[[IO[bytes]], object]) -> None:
    """Let ``write`` stream a file of any size to ``path``, which appears complete or
    not at all: locally through :func:`write_with` (a temporary file, then a rename);
    on an object store through the backend's writer (S3 and GCS: a multipart upload,
    which is only committed when the file is closed, and which ``discard`` aborts
    when ``write`` fails), so that the whole file never has to be in memory."""
    if not is_url(path):
        write_with(path, write)
        return
    handle = _remote(path, lambda fs, inner: fs.open(inner, "wb"))
    try:
        write(handle)
    except BaseException:
        with contextlib.suppress(Exception):  # abort the upload: nothing is committed
            handle.discard()
        with contextlib.suppress(Exception):  # and never commit it when collected
            handle.closed = True
        raise
    handle.close()
