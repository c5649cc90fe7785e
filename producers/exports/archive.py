"""A folder or a zip file, read the same way: files by their path inside the export.

Zips are read in place (nothing is extracted to disk). A zip whose files all sit in
one top folder, as a re-zipped download often does, is read as if that folder were
its root. Hidden files and folders (``.git``, ``.obsidian``, ``.DS_Store``, and the ``._*``
resource forks that fill a zip's ``__MACOSX`` folder) are not part of any export.

An export is read only where it was given. In a folder, a symlink (to a file or a folder)
whose target leaves the folder or is hidden in it is refused, as is anything that is not a
regular file; a symlink to another of the folder's files is skipped, because that file is
read where it lies (following it would read it twice). In a zip, a member that is a
symlink or whose name is absolute or climbs with ``..`` is refused. A refused entry is not
among the export's names, so no reader opens it, and ``refused`` lists each with why.

Decompressing a zip is bounded by ``ImportLimits``: the bytes out of the zip in all, and
the compression ratio of each member and of the zip as a whole. A reader ``admit``s what
it will read before reading any of it, so a zip refused on its declared sizes yields
nothing. The bytes are counted again as they come out, because declared sizes can lie and
a member can be read more than once. Going over a limit raises ``ExportRefused`` and
nothing more is read from the zip.
"""

from __future__ import annotations

import os
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType

from schemas.common import MiB

GiB = 1024 * MiB
CHUNK_BYTES = MiB
# Below this many bytes out, a ratio is not judged: a short run of blanks compresses
# 100:1 and costs nothing to inflate.
RATIO_GRACE_BYTES = MiB


@dataclass(frozen=True)
class ImportLimits:
    """How much one export may make us read; ``ImportSettings`` overrides each."""

    # A file read whole (a CSV, a page, a note). X's tweets*.js files are streamed
    # instead and are bounded only by max_zip_bytes.
    max_file_bytes: int = 256 * MiB
    # Bytes decompressed from one zip in all. Only the members a reader opens count, so
    # an X archive's gigabytes of media do not; its tweets.js runs to hundreds of MB.
    max_zip_bytes: int = 4 * GiB
    # Decompressed bytes per compressed byte, of each member read and of those members
    # against the zip's size on disk (which members that share their compressed bytes
    # cannot inflate). Text and pretty-printed tweets.js measure about 10:1; deflate
    # tops out near 1032:1 and bzip2 far beyond, which only a bomb reaches.
    max_zip_ratio: float = 100.0


DEFAULT_LIMITS = ImportLimits()


class UnreadableFile(Exception):
    """A folder, zip, or file inside one that could not be read; the message says why."""


class ExportRefused(Exception):
    """The zip as a whole is refused (a zip bomb, or too large): nothing more is read from it."""


def _size(count: int) -> str:
    return f"{count // MiB} MiB" if count >= MiB else f"{count} bytes"


def _nothing(started: bool) -> str:
    # Before the first byte out, a refusal means nothing from the zip was published.
    return "nothing more is read from the zip" if started else "nothing is read from the zip"


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in parts)


class Archive:
    """The files of one export, keyed by their POSIX path relative to the export's root."""

    def __init__(
        self,
        path: Path,
        members: dict[str, str],
        zip_file: zipfile.ZipFile | None,
        limits: ImportLimits,
        refused: dict[str, str] | None = None,
    ):
        self.path = path
        self._members = members  # name inside the export -> real path or zip member name
        self._refused = refused or {}  # name inside the export -> why it is not read
        self._zip = zip_file
        self._limits = limits
        self._unzipped = 0  # bytes decompressed from this zip so far
        # The zip's size on disk: every member's compressed bytes lie within it.
        self._zip_bytes = path.stat().st_size if zip_file is not None else 0

    @classmethod
    def open(cls, path: Path, limits: ImportLimits = DEFAULT_LIMITS) -> Archive:
        if path.is_dir():
            members, refused = _folder_members(path)
            return cls(path, members, None, limits, refused)
        if not path.exists():
            raise UnreadableFile("no such file or folder")
        try:
            zip_file = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise UnreadableFile("neither a folder nor a zip file") from None
        except OSError as error:
            raise UnreadableFile(f"cannot open: {error.strerror or error}") from None
        members, refused = _zip_members(zip_file)
        return cls(path, members, zip_file, limits, refused)

    @classmethod
    def single(cls, path: Path, limits: ImportLimits = DEFAULT_LIMITS) -> Archive:
        """One file read as an export of its own, named as it is in its folder.

        The person named this very file, so a symlink here is followed: it is what was given.
        """
        if not path.is_file():
            raise UnreadableFile("no such file")
        target = path.resolve()
        return cls(target.parent, {path.name: target.name}, None, limits)

    @property
    def names(self) -> list[str]:
        return sorted(self._members)

    @property
    def refused(self) -> list[tuple[str, str]]:
        """Where and why, for each entry of the export that is refused rather than read."""
        if self._zip is not None:
            return [(f"{self.path}:{name}", why) for name, why in sorted(self._refused.items())]
        return [(str(self.path / name), why) for name, why in sorted(self._refused.items())]

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def source(self, name: str) -> str:
        """Where a file is, for a failure report: ``export.zip:Top/Shares.csv`` or a path."""
        if self._zip is not None:
            return f"{self.path}:{self._members[name]}"
        return str(self.path / self._members[name])

    def admit(self, names: Iterable[str]) -> None:
        """Refuses the zip, before any of it is read, if the files a reader is about to read
        declare more than the limits allow; a no-op for a folder.

        Checked up front so that a zip refused on its headers publishes nothing at all.
        """
        if self._zip is None:
            return
        infos = [self._zip.getinfo(self._members[name]) for name in names if name in self]
        started = self._unzipped > 0
        for info in infos:
            self._check_member(info.filename, info.file_size, info.compress_size, started=started)
        self._check_zip(sum(info.file_size for info in infos), started=started)

    def read_bytes(self, name: str) -> bytes:
        """The whole file, at most ``max_file_bytes`` of it."""
        data = bytearray()
        for chunk in self.chunks(name):
            data += chunk
            if len(data) > self._limits.max_file_bytes:
                raise UnreadableFile(f"larger than {_size(self._limits.max_file_bytes)}")
        return bytes(data)

    def chunks(self, name: str) -> Iterator[bytes]:
        """The file's bytes as they are read, for a file too large to hold whole."""
        if name not in self._members:
            raise UnreadableFile(f"{name} is not in the export")
        real = self._members[name]
        try:
            if self._zip is None:
                yield from _file_chunks(self.path / real)
            else:
                yield from self._member_chunks(real)
        # A damaged or encrypted member surfaces as any of these, depending on where it breaks.
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            RuntimeError,
            NotImplementedError,
        ) as error:
            raise UnreadableFile(f"damaged zip member: {error}") from None
        except OSError as error:
            raise UnreadableFile(f"cannot read: {error.strerror or error}") from None

    def _member_chunks(self, member: str) -> Iterator[bytes]:
        """A member's bytes, counted against the limits as they come out of the decompressor.

        The declared sizes are checked first (a bomb with honest headers is refused before
        any of it is inflated). zipfile stops at the declared size, but the bytes are
        counted anyway rather than trusting that, and a member read twice counts twice.
        """
        assert self._zip is not None
        info = self._zip.getinfo(member)
        started = self._unzipped > 0
        self._check_member(member, info.file_size, info.compress_size, started=started)
        self._check_zip(self._unzipped + info.file_size, started=started)
        produced = 0
        with self._zip.open(info) as file:
            while chunk := file.read(CHUNK_BYTES):
                produced += len(chunk)
                self._unzipped += len(chunk)
                self._check_member(member, produced, info.compress_size, started=True)
                self._check_zip(self._unzipped, started=True)
                yield chunk

    def _check_member(self, member: str, size: int, compressed: int, *, started: bool) -> None:
        ratio = self._limits.max_zip_ratio
        if size > RATIO_GRACE_BYTES and size > ratio * max(compressed, 1):
            raise ExportRefused(
                f"refused as a zip bomb: {member} decompresses to more than {ratio:g} times "
                f"its compressed size (LLM_TWIN_IMPORT_MAX_ZIP_RATIO); {_nothing(started)}"
            )

    def _check_zip(self, total: int, *, started: bool) -> None:
        limits = self._limits
        if total > limits.max_zip_bytes:
            raise ExportRefused(
                f"refused: the files to read decompress to more than "
                f"{_size(limits.max_zip_bytes)} in all (LLM_TWIN_IMPORT_MAX_ZIP_BYTES); "
                f"{_nothing(started)}"
            )
        if total > RATIO_GRACE_BYTES and total > limits.max_zip_ratio * max(self._zip_bytes, 1):
            raise ExportRefused(
                f"refused as a zip bomb: the files to read decompress to more than "
                f"{limits.max_zip_ratio:g} times the size of the whole zip "
                f"(LLM_TWIN_IMPORT_MAX_ZIP_RATIO); {_nothing(started)}"
            )

    def read_text(self, name: str) -> str:
        """The file decoded as UTF-8 (a byte-order mark is dropped); never guessed."""
        data = self.read_bytes(name)
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise UnreadableFile(f"not UTF-8 text ({error.reason} at byte {error.start})") from None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _folder_members(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The files to read, by name, and the entries refused, with why."""
    members: dict[str, str] = {}
    refused: dict[str, str] = {}
    real_root = Path(os.path.realpath(root))
    # os.walk, not rglob: it prunes hidden folders before descending and never descends
    # into a symlinked folder (those are judged below like any other link).
    for folder, subfolders, files in os.walk(root, onerror=_unlistable):
        subfolders[:] = [name for name in subfolders if not _hidden((name,))]
        for name in [*subfolders, *files]:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            if _hidden((name,)):
                continue
            try:
                mode = os.lstat(path).st_mode
            except OSError as error:
                refused[relative] = f"cannot read: {error.strerror or error}"
                continue
            if stat.S_ISLNK(mode):
                why = _link_refusal(path, real_root)
                if why:
                    refused[relative] = why
            elif stat.S_ISREG(mode):
                members[relative] = relative
            elif not stat.S_ISDIR(mode):
                refused[relative] = "not a regular file"
    return members, refused


def _link_refusal(link: Path, real_root: Path) -> str:
    """Why a symlink in the export is refused; empty for one to another of its files or
    folders, which is skipped because its target is read where it lies.

    The target is resolved, never opened.
    """
    try:
        target = Path(os.path.realpath(link, strict=True))
    except (OSError, RuntimeError):
        return "a broken symlink (or a loop of them)"
    try:
        inside = target.relative_to(real_root)
    except ValueError:
        return "a symlink that leaves the imported folder; it is not followed"
    if _hidden(inside.parts):
        return "a symlink to a hidden file or folder; it is not followed"
    return ""


def _unlistable(error: OSError) -> None:
    # os.walk would skip a folder it cannot list without a word.
    raise UnreadableFile(f"cannot list {error.filename}: {error.strerror or error}")


def _zip_members(zip_file: zipfile.ZipFile) -> tuple[dict[str, str], dict[str, str]]:
    visible: dict[str, tuple[str, ...]] = {}
    refused: dict[str, str] = {}
    for info in zip_file.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir() or _hidden(parts):
            continue
        reason = _unsafe_member(info, parts)
        if reason:
            refused[info.filename] = reason
        else:
            visible[info.filename] = parts
    tops = {parts[0] for parts in visible.values()}
    wrapped = len(tops) == 1 and all(len(parts) > 1 for parts in visible.values())
    members = {"/".join(parts[1:] if wrapped else parts): real for real, parts in visible.items()}
    return members, refused


def _unsafe_member(info: zipfile.ZipInfo, parts: tuple[str, ...]) -> str:
    """Why a zip member is refused; empty when it is an ordinary file of the export."""
    if info.filename.startswith("/") or (parts and parts[0].endswith(":")):
        return "an absolute path in the zip"
    # A backslash is a folder separator to the zip tools of Windows.
    if ".." in info.filename.replace("\\", "/").split("/"):
        return "a path that climbs out of the zip (..)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symlink in the zip"
    return ""


def _file_chunks(path: Path) -> Iterator[bytes]:
    # O_NOFOLLOW: a file swapped for a symlink after the folder was listed is not followed.
    # O_NONBLOCK: a FIFO put in its place cannot hang the import.
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise UnreadableFile("not a regular file")
        while chunk := file.read(CHUNK_BYTES):
            yield chunk
