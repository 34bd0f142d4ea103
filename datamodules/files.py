"""Writing a run's files so that a kill, a full disk or a second run never leaves a bad one.

Every file a run writes (images, CSVs, plots, checkpoints) goes through :func:`write_file`: the
bytes go to a hidden temporary file beside the destination, which is then linked or renamed into
place. A reader sees the old file or the complete new one, never a half-written one; a failed
write removes its temporary file and leaves the destination as it was.
"""

from __future__ import annotations

import csv
import errno
import io
import os
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

from lightning_modules.errors import UserInputError

# Temporary files: hidden, and named after the writing process so that processes never clash.
TEMPORARY_MARK = ".partial-"


def write_file(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None],
               replace: bool = False, what: str = "file") -> Path:
    """Write a file atomically.

    Args:
        path: The destination.
        write: Writes the contents into the open binary file it is given.
        replace: Replace an existing file (the run's own, e.g. when a resumed run writes again
            what its interrupted part wrote); by default an existing file is never touched.
        what: What the file is, for the error message ("image file", "checkpoint").

    Returns:
        ``path``.

    Raises:
        UserInputError: If the file exists (and ``replace`` is False), the path is a folder, or
            the folder cannot be created or written (read-only, full).
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"Output path is a directory: {path}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"Cannot create the folder for {path} ({describe(error)}).") from None
    if not replace and path.exists():
        raise UserInputError(f"Refusing to overwrite existing file: {path}.")
    temporary = path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not reach the disk before the bytes
        if replace:
            os.replace(temporary, path)
        else:
            _move_into_new(temporary, path)
    except FileExistsError:
        temporary.unlink(missing_ok=True)
        raise UserInputError(f"Refusing to overwrite existing file: {path}.") from None
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise UserInputError(f"Cannot write {what} {path} ({describe(error)}).") from None
    except RuntimeError as error:
        temporary.unlink(missing_ok=True)
        # torch.save reports a failed write (a full disk) as a RuntimeError of its zip writer,
        # raised while the OSError is handled.
        cause = _os_error_behind(error)
        if cause is None:
            raise
        raise UserInputError(f"Cannot write {what} {path} ({describe(cause)}).") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_csv_rows(path: str | os.PathLike[str], columns: Sequence[str],
                   rows: Iterable[dict[str, Any]], replace: bool = False) -> Path:
    """Write a CSV file with a header line, atomically (see :func:`write_file`)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return write_file(path, lambda handle: handle.write(text.getvalue().encode()), replace,
                      what="CSV file")


def _move_into_new(temporary: Path, path: Path) -> None:
    """Rename ``temporary`` to ``path`` unless ``path`` exists (FileExistsError)."""
    try:
        os.link(temporary, path)  # fails if the file appeared meanwhile: never overwrite
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV):
            raise
        # A file system without hard links: check, then rename (a small window for a race).
        if path.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(path)) from None
        os.rename(temporary, path)
        return
    temporary.unlink()


def _os_error_behind(error: BaseException) -> OSError | None:
    """The OSError that ``error`` was raised from or while handling, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe(error: OSError) -> str:
    """An OS error in a few words: "No space left on device", "Read-only file system"."""
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno) if error.errno in errno.errorcode else str(error)
    return " ".join(str(error).split())
