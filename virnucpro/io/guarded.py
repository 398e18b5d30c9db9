"""A file for h5py's Python-file driver that survives a full disk.

When a write fails inside the HDF5 library (ENOSPC, EDQUOT, EFBIG), HDF5 keeps its dirty cache, fails again on
every close and flush, and h5py's object destructors then print tracebacks and can crash the interpreter at exit
(exit 139). Through this file HDF5 never sees a failure: the first write error is kept and later writes are
skipped, so the HDF5 file closes cleanly; `raise_error()` (after closing) re-raises the kept OSError, and the
caller discards the temporary file.
"""

from __future__ import annotations

import io
import os


class GuardedFile(io.RawIOBase):
    def __init__(self, path: str | os.PathLike, name: str | os.PathLike | None = None):
        """`name`: what an error calls the file (the final name of a temporary file)."""
        super().__init__()
        self.path = str(name or path)
        self._file = open(path, "w+b", buffering=0)
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        start = self._file.tell()
        if self.error is None:
            try:
                written = 0
                while written < len(view):  # a raw write may be partial
                    written += self._file.write(view[written:])
                return len(view)
            except OSError as error:
                self._keep(error)
        self._file.seek(start + len(view))  # pretend: HDF5 keeps its own idea of where the file ends
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._file.truncate(size)
            except OSError as error:
                self._keep(error)
        return self.tell() if size is None else size

    def flush(self) -> None:
        return None  # unbuffered: every write already went to the operating system

    def fsync(self) -> None:
        if self.error is None and not self._file.closed:
            try:
                os.fsync(self._file.fileno())
            except OSError as error:
                self._keep(error)

    def close(self) -> None:
        if not self._file.closed:
            self.fsync()
            self._file.close()
        super().close()

    def _keep(self, error: OSError) -> None:
        error.filename = error.filename or self.path
        self.error = error

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error
