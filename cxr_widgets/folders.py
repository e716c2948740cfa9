"""The folders outputs are written into: made when missing, checked writable.

One place for the error a researcher gets when an output folder cannot be made
or written: it names the folder, what it was for, why (the system's reason)
and what to do. Every writer of files (result store, exports, the command
line's outputs, batch-endpoint shards) goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CxrWidgetsError


def make_folder(
    folder: str | os.PathLike[str],
    *,
    purpose: str,
    fix: str,
    error: type[CxrWidgetsError] = CxrWidgetsError,
) -> Path:
    """Create ``folder`` and its parents unless they exist; the folder.

    ``purpose`` says what the folder is for (``"the result store results.sqlite"``)
    and ``fix`` what to do when it cannot be made; raised as ``error``.
    """
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise error(
            f"cannot create the folder {path} for {purpose} ({exc.strerror or exc}); {fix}"
        ) from None
    return path


def writable_file(
    file: str | os.PathLike[str],
    *,
    purpose: str,
    fix: str,
    error: type[CxrWidgetsError] = CxrWidgetsError,
    note: str = "",
) -> Path:
    """Make ``file``'s folder (:func:`make_folder`) and check that ``file`` can be
    written there (created, or replaced when it exists); the path.

    ``note`` is added to the read-only message (e.g. why the folder must be writable too).
    """
    path = Path(file)
    folder = make_folder(path.parent, purpose=purpose, fix=fix, error=error)
    if not os.access(folder, os.W_OK):
        where = f"the folder {folder}"
    elif path.exists() and not os.access(path, os.W_OK):
        where = str(path)
    else:
        return path
    raise error(f"cannot write {path} ({purpose}): {where} is read-only{note}; {fix}")
