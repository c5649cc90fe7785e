"""A folder or a zip file, read the same way: files by their path inside the export.

Zips are read in place (nothing is extracted to disk). A zip whose files all sit in
one top folder, as a re-zipped download often does, is read as if that folder were
its root. Hidden files and folders (``.git``, ``.obsidian``, ``.DS_Store``, and the ``._*``
resource forks that fill a zip's ``__MACOSX`` folder) are not part of any export.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from types import TracebackType

# An X archive's tweets.js of a prolific account runs to tens of MB; a single file far
# beyond that is not writing, and reading it would only exhaust memory.
MAX_FILE_BYTES = 256 * 1024 * 1024


class UnreadableFile(Exception):
    """A folder, zip, or file inside one that could not be read; the message says why."""


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(part.startswith(".") for part in parts)


class Archive:
    """The files of one export, keyed by their POSIX path relative to the export's root."""

    def __init__(self, path: Path, members: dict[str, str], zip_file: zipfile.ZipFile | None):
        self.path = path
        self._members = members  # name inside the export -> real path or zip member name
        self._zip = zip_file

    @classmethod
    def open(cls, path: Path) -> Archive:
        if path.is_dir():
            return cls(path, _folder_members(path), None)
        if not path.exists():
            raise UnreadableFile("no such file or folder")
        try:
            zip_file = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise UnreadableFile("neither a folder nor a zip file") from None
        except OSError as error:
            raise UnreadableFile(f"cannot open: {error.strerror or error}") from None
        return cls(path, _zip_members(zip_file), zip_file)

    @classmethod
    def single(cls, path: Path) -> Archive:
        """One file read as an export of its own, named as it is in its folder."""
        if not path.is_file():
            raise UnreadableFile("no such file")
        return cls(path.parent, {path.name: path.name}, None)

    @property
    def names(self) -> list[str]:
        return sorted(self._members)

    def __contains__(self, name: object) -> bool:
        return name in self._members

    def source(self, name: str) -> str:
        """Where a file is, for a failure report: ``export.zip:Top/Shares.csv`` or a path."""
        if self._zip is not None:
            return f"{self.path}:{self._members[name]}"
        return str(self.path / self._members[name])

    def read_bytes(self, name: str) -> bytes:
        if name not in self._members:
            raise UnreadableFile(f"{name} is not in the export")
        real = self._members[name]
        try:
            if self._zip is None:
                return _read_capped_file(self.path / real)
            return _read_capped_member(self._zip, real)
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


def _folder_members(root: Path) -> dict[str, str]:
    members: dict[str, str] = {}
    # os.walk, not rglob: it prunes hidden folders before descending and never follows a
    # symlinked folder out of the export.
    for folder, subfolders, files in os.walk(root, onerror=_unlistable):
        subfolders[:] = [name for name in subfolders if not _hidden((name,))]
        for name in files:
            relative = (Path(folder) / name).relative_to(root).as_posix()
            if not _hidden((name,)):
                members[relative] = relative
    return members


def _unlistable(error: OSError) -> None:
    # os.walk would skip a folder it cannot list without a word.
    raise UnreadableFile(f"cannot list {error.filename}: {error.strerror or error}")


def _zip_members(zip_file: zipfile.ZipFile) -> dict[str, str]:
    visible = {
        info.filename: PurePosixPath(info.filename).parts
        for info in zip_file.infolist()
        if not info.is_dir() and not _hidden(PurePosixPath(info.filename).parts)
    }
    tops = {parts[0] for parts in visible.values()}
    wrapped = len(tops) == 1 and all(len(parts) > 1 for parts in visible.values())
    return {"/".join(parts[1:] if wrapped else parts): real for real, parts in visible.items()}


def _read_capped_file(path: Path) -> bytes:
    with path.open("rb") as file:
        data = file.read(MAX_FILE_BYTES + 1)
    return _capped(data)


def _read_capped_member(zip_file: zipfile.ZipFile, member: str) -> bytes:
    # The header's declared size can lie; the read itself is bounded.
    with zip_file.open(member) as file:
        data = file.read(MAX_FILE_BYTES + 1)
    return _capped(data)


def _capped(data: bytes) -> bytes:
    if len(data) > MAX_FILE_BYTES:
        raise UnreadableFile(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data
