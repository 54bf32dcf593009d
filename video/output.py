"""Where output files go: ComfyUI's `prefix_00001_.ext` convention, confined to the output folder,
written under a temporary name and published atomically so an interrupted write never leaves a
truncated file under the final name.

A partial output is named `.spacetime.<host>.<pid>.<token>.partial[.ext]` after the machine and process
writing it, so that one left by a run that died (SIGKILL, a power loss) is recognised and removed by
the next write to the same folder: at once when its process, on this machine (or in this container), is
gone; after STALE_AFTER_S untouched when that cannot be told (another machine or container sharing the
folder, or Windows).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import time
import unicodedata
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("spacetime")

_SEPARATORS = re.compile(r"[\\/]+")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Characters no file name gets: controls (NUL, line breaks), format characters (bidi overrides, zero
# widths), lone surrogates, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
DEFAULT_NAME_MAX, DEFAULT_PATH_MAX = 255, 4096  # where the file system cannot be asked (Windows)
FRAME_NAME_ROOM = "/frame_00000.png"  # a PNG sequence's frames sit one level deeper


def _machine_tag() -> str:
    """Where a pid means one process: this host name and pid namespace (two containers sharing a folder
    differ here even when they share the host's name)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        namespace = ""
    return f"{zlib.crc32(f'{socket.gethostname()} {namespace}'.encode()):08x}"


_HOST = _machine_tag()
_PARTIAL = re.compile(r"\.spacetime\.([0-9a-f]{8})\.(\d+)\.[0-9a-f]{8}\.partial(\.[A-Za-z0-9]+)?")
# Partials of versions that did not record their writer: `.<stem>.<token>.partial[.ext]`.
_UNATTRIBUTED_PARTIAL = re.compile(r"\..+\.[0-9a-f]{8}\.partial(\.(mp4|webm|mkv|gif|webp))?", re.DOTALL)
_PARTIAL_NAME_BYTES = len(".spacetime.00000000.4194304.00000000.partial.webm")  # the longest, Linux's pid_max
STALE_AFTER_S = 24 * 3600  # a partial untouched for a day is abandoned, whoever wrote it


@dataclass(frozen=True)
class OutputTarget:
    """A resolved `filename_prefix`: the folder inside the output folder and the file stem."""

    root: Path  # the output folder, resolved
    folder: Path  # root / subfolder, resolved and inside root
    subfolder: str  # relative, with forward slashes, as ComfyUI's UI expects
    stem: str
    created: tuple[Path, ...] = ()  # folders made for it: removed again if nothing is published

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


def _shown(text: str) -> str:
    """A long prefix quoted with its middle elided, so an error message stays one readable line."""
    return repr(text if len(text) <= 60 else f"{text[:28]}…{text[-28:]}")


def _refused_character(text: str) -> str | None:
    """The first character of `text` a file name must not hold, described; None when there is none."""
    for character in text:
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            name = unicodedata.name(character, "")  # controls have none
            return f"U+{ord(character):04X}" + (f" ({name})" if name else "")
    return None


def _limits(folder: Path) -> tuple[int, int]:
    """(longest file name, longest path), in bytes, on the file system holding `folder`."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf
        return DEFAULT_NAME_MAX, DEFAULT_PATH_MAX


def split_prefix(prefix: str, root: Path, extension: str = "", width: int = 0, height: int = 0) -> list[str]:
    """Check a filename_prefix without touching the disk; return its parts (subfolders, then the stem).

    Refused: absolute paths, drive letters, '..' parts, control and invisible formatting characters
    (a right-to-left override disguises 'gnp.exe' as 'exe.png'), a file name longer than the file
    system allows once the counter and `extension` ("" for a folder of frames) are added, and a path
    longer than it allows.
    """
    if not isinstance(prefix, str) or not prefix.strip():
        raise ValueError("filename_prefix is empty; give a name such as 'spacetime/clip'.")
    root = Path(root).resolve()
    expanded = _expand_variables(prefix, width, height)
    refused = _refused_character(expanded)
    if refused:
        raise ValueError(
            f"filename_prefix={_shown(prefix)} contains {refused}, a control or invisible formatting "
            "character, which can hide or disguise a file name; remove it."
        )
    if os.path.isabs(expanded) or expanded.startswith(("/", "\\")) or _DRIVE.match(expanded):
        raise _outside_error(prefix, root, "absolute paths are not allowed")
    parts = [p for p in _SEPARATORS.split(expanded) if p not in ("", ".")]
    if ".." in parts:
        raise _outside_error(prefix, root, "'..' parts are not allowed")
    if not parts:
        raise ValueError(f"filename_prefix={prefix!r} names no file; give a name such as 'spacetime/clip'.")
    name_max, path_max = _limits(root)
    *subfolders, stem = parts
    for part in subfolders:
        if len(os.fsencode(part)) > name_max:
            raise ValueError(
                f"filename_prefix={_shown(prefix)}: the folder name {_shown(part)} is {len(os.fsencode(part))} "
                f"bytes, and names are limited to {name_max} bytes here; shorten it."
            )
    final = OutputTarget(root, root, "", stem).name(1, extension)
    overhead = len(os.fsencode(final)) - len(os.fsencode(stem))
    if len(os.fsencode(final)) > name_max:
        raise ValueError(
            f"filename_prefix={_shown(prefix)}: the file name would be {len(os.fsencode(final))} bytes "
            f"({_shown(final)}), and file names are limited to {name_max} bytes here; shorten the last part "
            f"of the prefix to at most {name_max - overhead} bytes (letters beyond ASCII take 2 to 4 bytes each)."
        )
    longest = max(len(os.fsencode(final)), _PARTIAL_NAME_BYTES) + (0 if extension else len(FRAME_NAME_ROOM))
    path_bytes = len(os.fsencode(root.joinpath(*subfolders))) + 1 + longest
    if path_bytes >= path_max:
        raise ValueError(
            f"filename_prefix={_shown(prefix)} makes a path of {path_bytes} bytes in {root}, and paths are "
            f"limited to {path_max - 1} bytes here; use fewer or shorter subfolders."
        )
    return parts


def _make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(
            f"the output folder {root} cannot be made: it, or a folder above it, is a file. Point "
            "SPACETIME_OUTPUT_DIR (or ComfyUI's --output-directory) at a folder."
        ) from None


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove folders made for an output that was never published, deepest first, if still empty."""
    for folder in reversed(tuple(folders)):
        try:
            folder.rmdir()
        except OSError:  # another writer is using it
            return


def _check_folder(prefix: str, root: Path, folder: Path) -> None:
    """An existing subfolder of the prefix: inside the output folder, and a folder."""
    if not folder.resolve().is_relative_to(root):
        raise _outside_error(prefix, root, f"'{folder.relative_to(root)}' is a link that leads outside")
    if not folder.is_dir():
        raise ValueError(
            f"filename_prefix={_shown(prefix)}: '{folder}' exists and is not a folder; pick another name."
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


def resolve_target(
    prefix: str, root: Path, width: int = 0, height: int = 0, extension: str = ""
) -> OutputTarget:
    """Turn a filename_prefix into a folder strictly inside `root`, creating it as needed.

    Everything split_prefix refuses is refused before any folder is made; so is a subfolder that is a
    file or a symbolic link leading outside the output folder, and the folders made are removed again.
    """
    root = Path(root).resolve()
    *subfolders, stem = split_prefix(prefix, root, extension, width, height)
    _make_root(root)
    folder, created = root, []
    try:
        for part in subfolders:
            folder = folder / part
            try:
                folder.mkdir()
                created.append(folder)  # new: a real folder inside its parent
                continue
            except FileExistsError:
                pass
            _check_folder(prefix, root, folder)
    except BaseException:
        _remove_empty(created)
        raise
    return OutputTarget(
        root=root, folder=folder.resolve(), subfolder="/".join(subfolders), stem=stem, created=tuple(created)
    )


def next_counter(target: OutputTarget) -> int:
    """One past the highest counter already used for this stem in the folder (ComfyUI's rule)."""
    pattern = re.compile(re.escape(target.stem) + r"_(\d+)_", re.IGNORECASE)
    highest = 0
    for entry in os.listdir(target.folder):
        match = pattern.match(entry)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _partial_name(extension: str) -> str:
    return f".spacetime.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial" + (
        f".{extension}" if extension else ""
    )


def _running(pid: int) -> bool:
    """Whether process `pid` runs on this machine; True where that cannot be asked."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would end the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # someone else's process
        return True
    return True


def remove_stale_partials(folder: Path) -> list[str]:
    """Remove the partial outputs in `folder` whose run has ended: written on this machine by a process
    that no longer runs, or untouched for STALE_AFTER_S. Returns their names."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        attributed = _PARTIAL.fullmatch(entry.name)
        if not (attributed or _UNATTRIBUTED_PARTIAL.fullmatch(entry.name)):
            continue
        try:
            idle = time.time() - entry.stat(follow_symlinks=False).st_mtime
            ended = attributed and attributed[1] == _HOST and not _running(int(attributed[2]))
            if not (ended or idle > STALE_AFTER_S):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:  # removed meanwhile by another run, or not ours to remove
            continue
        removed.append(entry.name)
    if removed:
        log.info(
            "Removed %d partial output(s) left in %s by runs that ended: %s",
            len(removed),
            folder,
            ", ".join(removed),
        )
    return removed


def _publish_file(temporary: Path, final: Path) -> None:
    """Move a finished file into place without ever replacing an existing one."""
    try:
        os.link(temporary, final)  # fails if `final` exists, even as a dangling link
    except FileExistsError:
        raise  # the caller moves on to the next counter
    except OSError:
        # Filesystems without hard links: reserve the name (O_EXCL fails if it is taken), then move onto it.
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        try:
            os.replace(temporary, final)
        except BaseException:
            final.unlink()
            raise
        return
    os.unlink(temporary)


def _publish_folder(temporary: Path, final: Path) -> None:
    """Move a finished folder into place without ever replacing an existing one: the name is reserved with
    mkdir (which fails if it is taken), then the folder is renamed onto that empty one."""
    os.mkdir(final)
    try:
        if os.name == "nt":  # Windows renames onto no folder: free the name; a writer taking it meanwhile
            os.rmdir(final)  # makes the rename fail with FileExistsError, and this one moves on
        os.rename(temporary, final)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.rmdir(final)  # the reservation, if still empty
        if isinstance(error, OSError) and error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "taken by another writer", str(final)) from None
        raise


@dataclass
class PendingOutput:
    temporary: Path  # write here
    final: Path | None = None  # where it was published, once the block succeeded


@contextlib.contextmanager
def _staged(folder: Path, extension: str, is_folder: bool) -> Iterator[Path]:
    """A new partial file (or folder) in `folder`, removed on the way out unless it was published."""
    remove_stale_partials(folder)
    temporary = folder / _partial_name(extension)
    if is_folder:
        temporary.mkdir()
    else:
        temporary.touch(exist_ok=False)  # made now: the folder is in use from here on
    try:
        yield temporary
    finally:
        if temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def atomic_output(target: OutputTarget, extension: str, is_folder: bool = False) -> Iterator[PendingOutput]:
    """Yield a temporary path to write to; on success publish it under the next free counter.

    On any exception (an encoder error, a cancel, SIGTERM in the command line) the temporary file or
    folder is removed, with the folders made for the target, and nothing appears under a final name.
    """
    pending = None
    try:
        with _staged(target.folder, extension, is_folder) as temporary:
            pending = PendingOutput(temporary=temporary)
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
        if pending is None or pending.final is None:
            _remove_empty(target.created)


def check_new_path(path: Path) -> None:
    """An explicit output path (not a prefix) names a new file or folder, in a folder that exists and may be
    written to."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(
            f"{path} exists; it is never replaced: choose another name, or remove it first."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist; create it first.")
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(
            f"{path}: the folder {path.parent} cannot be written to (read-only, or not yours)."
        )


@contextlib.contextmanager
def atomic_file(path: Path, extension: str, is_folder: bool = False) -> Iterator[PendingOutput]:
    """Yield a temporary path beside `path`; on success publish it as exactly `path`, which must not
    exist (FileExistsError). On any exception nothing appears at `path`."""
    with _staged(path.parent, extension, is_folder) as temporary:
        pending = PendingOutput(temporary=temporary)
        yield pending
        (_publish_folder if is_folder else _publish_file)(temporary, path)
        pending.final = path
