"""Where output files go: ComfyUI's `prefix_00001_.ext` convention, confined to the output folder,
written under a temporary name and published atomically so an interrupted write never leaves a
truncated file under the final name."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SEPARATORS = re.compile(r"[\\/]+")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class OutputTarget:
    """A resolved `filename_prefix`: the folder inside the output folder and the file stem."""

    root: Path  # the output folder, resolved
    folder: Path  # root / subfolder, resolved and inside root
    subfolder: str  # relative, with forward slashes, as ComfyUI's UI expects
    stem: str

    def name(self, counter: int, extension: str) -> str:
        """ComfyUI's naming: `stem_00001_.ext` (a folder of frames drops the extension)."""
        return f"{self.stem}_{counter:05}_" + (f".{extension}" if extension else "")


def _expand_variables(prefix: str, width: int, height: int) -> str:
    """The %variables% ComfyUI's own save nodes expand in filename_prefix."""
    now = time.localtime()
    values = {
        "width": str(width),
        "height": str(height),
        "year": str(now.tm_year),
        "month": f"{now.tm_mon:02}",
        "day": f"{now.tm_mday:02}",
        "hour": f"{now.tm_hour:02}",
        "minute": f"{now.tm_min:02}",
        "second": f"{now.tm_sec:02}",
    }
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", value)
    return prefix


def _outside_error(prefix: str, root: Path, why: str) -> ValueError:
    return ValueError(
        f"filename_prefix={prefix!r} would write outside ComfyUI's output folder ({root}): {why}. "
        "Use a plain name or a subfolder inside the output folder, such as 'spacetime/clip'."
    )


def split_prefix(prefix: str, root: Path, extension: str = "", width: int = 0, height: int = 0) -> list[str]:
    """Check a filename_prefix without touching the disk; return its parts (subfolders, then the stem).
    Refused: absolute paths, drive letters, '..' parts."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError("filename_prefix is empty; give a name such as 'spacetime/clip'.")
    if "\x00" in prefix:
        raise ValueError(f"filename_prefix={prefix!r} contains a NUL character; remove it.")
    expanded = _expand_variables(prefix, width, height)
    if os.path.isabs(expanded) or expanded.startswith(("/", "\\")) or _DRIVE.match(expanded):
        raise _outside_error(prefix, root, "absolute paths are not allowed")
    parts = [p for p in _SEPARATORS.split(expanded) if p not in ("", ".")]
    if ".." in parts:
        raise _outside_error(prefix, root, "'..' parts are not allowed")
    if not parts:
        raise ValueError(f"filename_prefix={prefix!r} names no file; give a name such as 'spacetime/clip'.")
    return parts


def _check_folder(prefix: str, root: Path, folder: Path) -> None:
    """An existing subfolder of the prefix: inside the output folder, and a folder."""
    if not folder.resolve().is_relative_to(root):
        raise _outside_error(prefix, root, f"'{folder.relative_to(root)}' is a link that leads outside")
    if not folder.is_dir():
        raise ValueError(
            f"filename_prefix={prefix!r}: '{folder}' exists and is not a folder; pick another name."
        )


def check_target(prefix: str, root: Path, width: int = 0, height: int = 0, extension: str = "") -> None:
    """What resolve_target would refuse, found without creating or writing anything: the prefix's rules,
    an output folder or subfolder that is a file or a link leading outside, and a folder this process
    cannot write in (a read-only file system, no permission)."""
    root = Path(root).resolve()
    *subfolders, _ = split_prefix(prefix, root, extension, width, height)
    nearest = root  # the folder the first missing one would be made in, or the deepest that exists
    while not nearest.exists():
        nearest = nearest.parent
    if not nearest.is_dir():
        where = "is a file" if nearest == root else f"would be made inside {nearest}, which is a file"
        raise ValueError(
            f"the output folder {root} {where}, not a folder: point SPACETIME_OUTPUT_DIR (or ComfyUI's "
            "--output-directory) at a folder."
        )
    if nearest == root:
        for part in subfolders:
            folder = nearest / part
            if not (folder.exists() or folder.is_symlink()):
                break
            _check_folder(prefix, root, folder)
            nearest = folder
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write in {nearest}: it is on a read-only file system or this user may not write there. "
            "Choose a writable output folder, or change its permissions."
        )


def resolve_target(prefix: str, root: Path, width: int = 0, height: int = 0) -> OutputTarget:
    """Turn a filename_prefix into a folder strictly inside `root`, creating it as needed.

    Refused: absolute paths, drive letters, '..' parts, and any folder that resolves outside
    the output folder through a symbolic link.
    """
    root = Path(root).resolve()
    *subfolders, stem = split_prefix(prefix, root, "", width, height)

    folder = root
    root.mkdir(parents=True, exist_ok=True)
    for part in subfolders:
        folder = folder / part
        if not (folder.exists() or folder.is_symlink()):
            folder.mkdir()
        _check_folder(prefix, root, folder)
    return OutputTarget(root=root, folder=folder.resolve(), subfolder="/".join(subfolders), stem=stem)


def next_counter(target: OutputTarget) -> int:
    """One past the highest counter already used for this stem in the folder (ComfyUI's rule)."""
    pattern = re.compile(re.escape(target.stem) + r"_(\d+)_", re.IGNORECASE)
    highest = 0
    for entry in os.listdir(target.folder):
        match = pattern.match(entry)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _publish_file(temporary: Path, final: Path) -> None:
    """Move a finished file into place without ever replacing an existing one."""
    try:
        os.link(temporary, final)  # fails if `final` exists, even as a dangling link
    except FileExistsError:
        raise  # the caller moves on to the next counter
    except OSError:
        # Filesystems without hard links: rename, after checking that nothing is there.
        if final.exists() or final.is_symlink():
            raise FileExistsError(final) from None
        os.rename(temporary, final)
        return
    os.unlink(temporary)


def _publish_folder(temporary: Path, final: Path) -> None:
    if final.exists() or final.is_symlink():
        raise FileExistsError(final)
    os.rename(temporary, final)


@dataclass
class PendingOutput:
    temporary: Path  # write here
    final: Path | None = None  # where it was published, once the block succeeded


@contextlib.contextmanager
def atomic_output(target: OutputTarget, extension: str, is_folder: bool = False) -> Iterator[PendingOutput]:
    """Yield a temporary path to write to; on success publish it under the next free counter.

    On any exception (an encoder error, a cancel) the temporary file or folder is removed and
    nothing appears under a final name.
    """
    token = uuid.uuid4().hex[:8]
    suffix = f".{extension}" if extension else ""
    temporary = target.folder / f".{target.stem}.{token}.partial{suffix}"
    pending = PendingOutput(temporary=temporary)
    if is_folder:
        temporary.mkdir()
    try:
        yield pending
        counter = next_counter(target)
        while True:
            final = target.folder / target.name(counter, extension)
            try:
                (_publish_folder if is_folder else _publish_file)(temporary, final)
                break
            except FileExistsError:
                counter += 1
        pending.final = final
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()
