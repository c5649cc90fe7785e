"""A git repository → one ``RawDocument`` per text file written by its author.

A remote repository is cloned shallowly (bare, ``--depth 1``) into
``workdir/<sha256 of its canonical URL>[:16]`` and, on a later crawl, fetched and
moved to the new commit, so re-crawls are cheap. A local path is read where it is.
Files are read from the commit at HEAD (``git ls-tree`` + ``git cat-file``), not
from the working tree: the content is exactly the commit named in the metadata,
uncommitted edits never leak in, ignored and untracked files are never seen, and a
clone needs no checkout.

Identity (docs/wire-contracts.md): ``canonical_source`` is
``<canonical repository URL>#<path>``. Every spelling of one repository has the
same canonical URL, and a local checkout borrows its ``origin``'s, so a clone and
a checkout of one repository give the same document ids.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import ValidationError

from producers.harvest import Harvest
from schemas.documents import Author, DocumentKind, RawDocument
from schemas.ids import canonical_url

# Seconds. A clone or fetch crosses the network; every other command reads local objects.
NETWORK_TIMEOUT_S = 300
LOCAL_TIMEOUT_S = 120

# --- What is read, and what is left out -------------------------------------------------
# Rules are applied in this order, and a file counts once, under the first rule it meets:
# where it lives, what kind of tree entry it is, its name, its size, then its bytes.


class Skip(StrEnum):
    """Why a tracked file produced no document. None of these is a failure."""

    VENDORED = "vendored"  # under a folder in VENDORED_DIRS
    SYMLINK = "symlink"
    SUBMODULE = "submodule"  # another repository: crawl it on its own
    LOCK_FILE = "lock_file"
    GENERATED = "generated"  # minified, source maps, protobuf output
    NON_TEXT_EXTENSION = "non_text_extension"
    TOO_LARGE = "too_large"  # over max_file_bytes
    EMPTY = "empty"  # empty or whitespace only
    BINARY = "binary"  # a NUL byte in the first BINARY_SNIFF_BYTES
    NOT_UTF8 = "not_utf8"  # content, or the path itself, is not valid UTF-8
    LFS_POINTER = "lfs_pointer"  # a Git LFS stub: the real file is not in git


# Folders whose contents someone else wrote or a tool produced; matched against every
# folder in the path (case-insensitively), so web/node_modules/... is skipped too.
VENDORED_DIRS = frozenset(
    {
        "node_modules",
        "vendor",
        "third_party",
        "dist",
        "build",
        ".venv",
        "venv",
        "__pycache__",
        "target",
        "site-packages",
        "generated",
        ".git",
    }
)

# Dependency lock files: machine-written, large, and nobody's voice.
LOCK_FILE_NAMES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "uv.lock",
        "pipfile.lock",
        "cargo.lock",
        "gemfile.lock",
        "composer.lock",
        "go.sum",
    }
)
LOCK_FILE_SUFFIXES = (".lock",)

# Name endings of files a tool generated.
GENERATED_SUFFIXES = (
    ".min.js",
    ".min.css",
    ".map",
    "_pb2.py",
    "_pb2.pyi",
    "_pb2_grpc.py",
    ".pb.go",
)

# Extensions that are never text worth reading, checked before any byte is fetched.
# SVG is XML, but drawn by a tool rather than written.
NON_TEXT_EXTENSIONS = frozenset(
    {
        # images
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".icns", ".webp", ".tif", ".tiff",
        ".psd", ".heic", ".avif", ".svg",
        # audio and video
        ".mp3", ".wav", ".ogg", ".flac", ".m4a", ".mp4", ".mov", ".avi", ".mkv", ".webm",
        # archives and packages
        ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".jar", ".war",
        ".whl", ".egg", ".deb", ".rpm", ".dmg", ".iso",
        # fonts
        ".ttf", ".otf", ".woff", ".woff2", ".eot",
        # documents
        ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods",
        # models, weights and data dumps
        ".pt", ".pth", ".ckpt", ".safetensors", ".onnx", ".h5", ".hdf5", ".pb", ".tflite",
        ".gguf", ".bin", ".pkl", ".pickle", ".joblib", ".npy", ".npz", ".parquet",
        ".sqlite", ".sqlite3", ".db",
        # compiled code
        ".exe", ".dll", ".so", ".dylib", ".o", ".a", ".class", ".pyc", ".pyo", ".wasm",
    }
)  # fmt: skip

# Git's own heuristic: a NUL byte early in the file means binary.
BINARY_SNIFF_BYTES = 8 * 1024
LFS_POINTER_PREFIX = "version https://git-lfs.github.com/spec/"

# metadata["language"], from the extension (lower case), else from the whole name.
LANGUAGE_BY_EXTENSION = {
    ".py": "python",
    ".pyi": "python",
    ".ipynb": "jupyter",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".rb": "ruby",
    ".php": "php",
    ".c": "c",
    ".h": "c",
    ".cc": "c++",
    ".cpp": "c++",
    ".hpp": "c++",
    ".cs": "c#",
    ".swift": "swift",
    ".sh": "shell",
    ".bash": "shell",
    ".sql": "sql",
    ".r": "r",
    ".jl": "julia",
    ".lua": "lua",
    ".hs": "haskell",
    ".ex": "elixir",
    ".exs": "elixir",
    ".md": "markdown",
    ".rst": "restructuredtext",
    ".txt": "text",
    ".html": "html",
    ".css": "css",
    ".scss": "scss",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".xml": "xml",
    ".tex": "latex",
}
LANGUAGE_BY_NAME = {"dockerfile": "dockerfile", "makefile": "make"}

# --- The result -----------------------------------------------------------------------


@dataclass
class RepositoryHarvest(Harvest):
    """A harvest plus how many tracked files were left out, per ``Skip`` reason."""

    skipped: dict[str, int] = field(default_factory=dict)


class GitError(Exception):
    """A git command failed; the message is what a user should read."""


# --- Locations ------------------------------------------------------------------------

_GITHUB_HOSTS = frozenset({"github.com", "www.github.com"})
# git's own rule: "host:path" with no slash before the colon is scp-like ssh.
_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?(?P<host>[^@/:]+):(?P<path>.+)$")


def is_remote(location: str) -> bool:
    """Whether ``location`` is a URL to clone rather than a local path."""
    return "://" in location or _SCP_LIKE.match(location) is not None


def canonical_repository_url(location: str) -> str:
    """The one URL every spelling of a repository reduces to (the ids are built on it).

    ``https://github.com/owner/repo`` for any GitHub spelling (owner and repo keep
    their case); ``canonical_url`` of other http(s) URLs; ``ssh://host/path`` for
    ssh and scp-like URLs; ``file:///path`` for file URLs. Credentials, ``.git`` and
    a trailing slash are dropped. Raises ``ValueError`` for anything else.
    """
    location = location.strip()
    if "://" not in location:
        scp = _SCP_LIKE.match(location)
        if scp is None:
            raise ValueError(f"not a repository URL: {location!r}")
        location = f"ssh://{scp['host']}/{scp['path'].lstrip('/')}"
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if host in _GITHUB_HOSTS:
        owner, repo, _ = _github_path(parts.path)
        return f"https://github.com/{owner}/{repo}"
    path = _strip_repository_suffix(parts.path)
    if scheme == "file":
        return PurePosixPath(unquote(path) or "/").as_uri()
    if not host:
        raise ValueError(f"not a repository URL: {location!r}")
    if scheme in ("http", "https"):
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return _strip_repository_suffix(canonical_url(urlunsplit((scheme, netloc, path, "", ""))))
    # ssh, git and the rest: no query or fragment means anything to git.
    port = "" if parts.port in (None, 22) else f":{parts.port}"
    return f"{scheme}://{host}{port}/{path.lstrip('/')}"


def github_branch(location: str) -> str | None:
    """The branch in a ``https://github.com/owner/repo/tree/<branch>`` URL, else None.

    Everything after ``tree/`` is the branch, since branch names may hold slashes.
    """
    parts = urlsplit(location.strip())
    if "://" not in location or (parts.hostname or "").lower() not in _GITHUB_HOSTS:
        return None
    return _github_path(parts.path)[2]


def _github_path(path: str) -> tuple[str, str, str | None]:
    segments = [s for s in path.split("/") if s]
    if len(segments) < 2:
        raise ValueError(f"not a GitHub repository URL (no owner/repo): {path!r}")
    owner, repo, rest = segments[0], segments[1].removesuffix(".git"), segments[2:]
    branch = "/".join(rest[1:]) if len(rest) > 1 and rest[0] == "tree" else None
    if branch is not None and branch.startswith("-"):
        raise ValueError(f"not a branch name: {branch!r}")
    return owner, repo, branch


def _strip_repository_suffix(path: str) -> str:
    return path.rstrip("/").removesuffix(".git").rstrip("/")


def _clone_url(location: str) -> str:
    """What to hand ``git clone``: GitHub page URLs (``/tree/...``) become the repository's."""
    parts = urlsplit(location)
    if parts.scheme.lower() in ("http", "https") and (parts.hostname or "") in _GITHUB_HOSTS:
        owner, repo, _ = _github_path(parts.path)
        # netloc as given: it may carry the credentials for a private repository.
        return urlunsplit(("https", parts.netloc, f"/{owner}/{repo}.git", "", ""))
    return location


def redact_credentials(text: str, location: str) -> str:
    """``text`` without the secrets in ``location``'s user info: reports must never carry them.

    The password, and over http(s) a user name given without one, which is how a token
    is passed (``https://TOKEN@github.com/owner/repo``), wherever either appears,
    spelled as given or percent-decoded.
    """
    if "://" not in location:
        return text
    parts = urlsplit(location)
    userinfo, at, _ = parts.netloc.rpartition("@")
    if not at:
        return text
    text = text.replace(f"//{userinfo}@", "//***@")
    secret = parts.password
    token = parts.username or ""
    # A token is long; a short user name is blanked only where it stands in the URL,
    # since replacing "a" everywhere would garble the reason.
    if secret is None and parts.scheme.lower() in ("http", "https") and len(token) >= 8:
        secret = token
    for spelling in {secret, unquote(secret)} if secret else ():
        text = text.replace(spelling, "***")
    return text


@dataclass(frozen=True)
class PinnedRemote:
    """Where a clone may connect: the vetted addresses of the clone URL's host."""

    host: str
    port: int
    addresses: tuple[str, ...]

    def git_config(self) -> list[str]:
        """``-c`` options that make git's own connection honour the vetting."""
        resolved = ",".join(f"[{a}]" if ":" in a else a for a in self.addresses)
        return [
            # curl connects to these addresses for the host instead of resolving it again.
            "-c", f"http.curloptResolve={self.host}:{self.port}:{resolved}",
            # A redirect would lead to a host nobody vetted.
            "-c", "http.followRedirects=false",
            # http(s) only: no other transport (ext::, file::, ssh) behind a submodule or alias.
            "-c", "protocol.allow=never",
            "-c", "protocol.http.allow=always",
            "-c", "protocol.https.allow=always",
        ]  # fmt: skip


# --- Running git ------------------------------------------------------------------------


# A proxy resolves the name itself, and would reach an address nobody vetted.
_PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
)


def _git(
    args: list[str],
    *,
    cwd: Path,
    timeout: int,
    stdin: bytes | None = None,
    pinned: PinnedRemote | None = None,
) -> bytes:
    """``git <args>``'s stdout; ``GitError`` with the tail of its stderr when it fails."""
    executable = shutil.which("git")
    if executable is None:
        raise GitError("git is not installed (no `git` on PATH)")
    env = os.environ.copy()
    config = pinned.git_config() if pinned else []
    if pinned:
        for variable in _PROXY_VARIABLES:
            env.pop(variable, None)
    # A private or missing repository must fail, not wait for a password nobody will type.
    env["GIT_TERMINAL_PROMPT"] = "0"
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    try:
        result = subprocess.run(
            [executable, *config, *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise GitError(f"git {args[0]} timed out after {timeout} s") from error
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", errors="replace").strip()[-600:]
        raise GitError(f"git {args[0]} failed (exit {result.returncode}): {tail}")
    return result.stdout


@dataclass(frozen=True)
class _Tree:
    """Where to run git to read the files, and the repository's canonical URL."""

    cwd: Path
    repository: str


def _clone_or_fetch(
    location: str, workdir: Path, max_file_bytes: int, pinned: PinnedRemote | None
) -> _Tree:
    repository = canonical_repository_url(location)
    branch = github_branch(location)
    url = _clone_url(location)
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / hashlib.sha256(repository.encode()).hexdigest()[:16]
    if _reusable(target, max_file_bytes):
        _git(["remote", "set-url", "origin", url], cwd=target, timeout=LOCAL_TIMEOUT_S)
        fetch = ["fetch", "--quiet", "--depth", "1", "origin", branch or "HEAD"]
        _git(fetch, cwd=target, timeout=NETWORK_TIMEOUT_S, pinned=pinned)
        # Detached: HEAD is simply "the commit this crawl read", whichever branch it came from.
        move = ["update-ref", "--no-deref", "HEAD", "FETCH_HEAD"]
        _git(move, cwd=target, timeout=LOCAL_TIMEOUT_S)
        return _Tree(target, repository)
    shutil.rmtree(target, ignore_errors=True)
    # Clone beside the target and rename it into place, so a clone killed halfway
    # never leaves a broken repository where the next crawl would fetch into it.
    partial = Path(tempfile.mkdtemp(prefix=f"{target.name}.partial-", dir=workdir))
    try:
        clone = ["clone", "--quiet", "--bare", "--depth", "1"]
        # Blobs over the limit would be skipped anyway: servers that allow it never send
        # them (GitHub does; others ignore the filter with a warning and send everything).
        clone += [f"--filter=blob:limit={max_file_bytes}"]
        clone += ["--branch", branch] if branch else []
        clone += ["--", url, str(partial)]
        _git(clone, cwd=workdir, timeout=NETWORK_TIMEOUT_S, pinned=pinned)
        limit = ["config", "twin.maxFileBytes", str(max_file_bytes)]
        _git(limit, cwd=partial, timeout=LOCAL_TIMEOUT_S)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return _Tree(target, repository)


def _reusable(target: Path, max_file_bytes: int) -> bool:
    """Whether ``target`` is a clone from an earlier crawl that a fetch can bring up to date.

    A clone made with a smaller size limit lacks blobs this crawl wants: clone again.
    """
    if not (target / "HEAD").is_file():
        return False
    try:
        stored = _git(["config", "--get", "twin.maxFileBytes"], cwd=target, timeout=LOCAL_TIMEOUT_S)
    except GitError:
        return False
    return stored.strip().isdigit() and int(stored) >= max_file_bytes


def _open_local(location: str) -> _Tree:
    path = Path(location).expanduser().absolute()
    if not path.is_dir():
        raise GitError(f"no such directory: {path}")
    try:
        top = _git(["rev-parse", "--show-toplevel"], cwd=path, timeout=LOCAL_TIMEOUT_S)
    except GitError as error:
        raise GitError(f"not a git work tree: {path} ({error})") from error
    toplevel = Path(top.decode().strip())
    try:
        origin = _git(["config", "--get", "remote.origin.url"], cwd=path, timeout=LOCAL_TIMEOUT_S)
    except GitError:
        return _Tree(path, toplevel.as_uri())  # no origin: the checkout is its own identity
    origin_url = origin.decode().strip()
    if not is_remote(origin_url):
        # A clone made from a local path records that path, maybe relative to the checkout.
        origin_url = Path(os.path.normpath(toplevel / origin_url)).as_uri()
    return _Tree(path, canonical_repository_url(origin_url))


# --- Reading the files -------------------------------------------------------------------


def read_repository(
    location: str,
    author: Author,
    *,
    workdir: Path,
    crawled_at: datetime,
    max_file_bytes: int = 256 * 1024,
    pinned: PinnedRemote | None = None,
) -> RepositoryHarvest:
    """One document per text file at HEAD of ``location``; a failure when it cannot be read.

    ``location``: a GitHub URL (``/tree/<branch>`` picks the branch), any clone URL
    (https, ssh, scp-like, file), or a local path to a work tree (a folder inside one
    reads only that folder). Remote repositories are kept under ``workdir``. ``pinned``
    (from a crawl, which vets the host first) is where git may connect.
    """
    harvest = RepositoryHarvest()
    location = location.strip()
    try:
        if is_remote(location):
            tree = _clone_or_fetch(location, workdir, max_file_bytes, pinned)
        else:
            tree = _open_local(location)
        commit, committed_at = _head(tree.cwd)
        entries = _list_files(tree.cwd)
        missing = _missing_objects(tree.cwd)
        candidates, skipped = _select(entries, missing, tree.cwd, max_file_bytes)
        blobs = _read_blobs(tree.cwd, {oid for _, oid in candidates})
    except (GitError, ValueError, OSError) as error:  # OSError: workdir not writable
        harvest.fail(
            redact_credentials(location, location), redact_credentials(str(error), location)
        )
        return harvest

    github = tree.repository.startswith("https://github.com/")
    for path, oid in candidates:
        text = _text(blobs[oid])
        if isinstance(text, Skip):
            skipped[text] += 1
            continue
        source = f"{tree.repository}#{path}"
        try:
            document = RawDocument.build(
                author=author,
                kind=DocumentKind.REPOSITORY_FILE,
                platform="github" if github else "git",
                canonical_source=source,
                title=path,
                content=text,
                crawled_at=crawled_at,
                source_url=f"{tree.repository}/blob/{commit}/{quote(path)}" if github else None,
                # The file's own last commit would cost a `git log` per file (and a shallow
                # clone does not have it): the commit at HEAD dates every file.
                published_at=committed_at,
                metadata={
                    "repository": tree.repository,
                    "path": path,
                    "commit": commit,
                    "language": language(path),
                },
            )
        except ValidationError as error:  # e.g. a path longer than a title may be
            harvest.fail(source, f"not a valid document: {error.errors()[0]['msg']}")
            continue
        harvest.documents.append(document)
    harvest.skipped = dict(skipped)
    return harvest


def _head(cwd: Path) -> tuple[str, datetime]:
    """The full sha at HEAD and its committer time (when it landed, aware UTC)."""
    try:
        out = _git(["show", "-s", "--format=%H %ct", "HEAD"], cwd=cwd, timeout=LOCAL_TIMEOUT_S)
    except GitError as error:
        raise GitError(f"no commit at HEAD (an empty repository?): {error}") from error
    sha, seconds = out.decode().split()
    return sha, datetime.fromtimestamp(int(seconds), tz=UTC)


@dataclass(frozen=True)
class _Entry:
    mode: str
    oid: str
    path: bytes  # as git stores it: not necessarily UTF-8


def _list_files(cwd: Path) -> list[_Entry]:
    """Every file in HEAD's tree under ``cwd``, with its path from the repository's root."""
    out = _git(["ls-tree", "-r", "-z", "--full-name", "HEAD"], cwd=cwd, timeout=LOCAL_TIMEOUT_S)
    entries = []
    for record in out.split(b"\0"):
        if record:
            info, _, path = record.partition(b"\t")
            mode, _kind, oid = info.decode().split()
            entries.append(_Entry(mode, oid, path))
    return entries


def _missing_objects(cwd: Path) -> set[str]:
    """Blobs a partial clone's filter left on the server: all over the size limit.

    Listed without touching them, since asking git for a missing blob's size would
    make it download the blob.
    """
    args = ["rev-list", "--objects", "--missing=print", "--no-object-names", "--no-walk", "HEAD"]
    out = _git(args, cwd=cwd, timeout=LOCAL_TIMEOUT_S)
    return {line[1:] for line in out.decode().splitlines() if line.startswith("?")}


def _select(
    entries: list[_Entry], missing: set[str], cwd: Path, max_file_bytes: int
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """The ``(path, oid)`` pairs worth reading, and the count of the rest per reason."""
    skipped: Counter[str] = Counter()
    named: list[tuple[str, str]] = []
    for entry in entries:
        reason = _skip_by_entry(entry)
        if reason is None and entry.oid in missing:
            reason = Skip.TOO_LARGE
        if reason is not None:
            skipped[reason] += 1
        else:
            named.append((entry.path.decode(), entry.oid))
    sizes = _sizes(cwd, {oid for _, oid in named})
    candidates = []
    for path, oid in named:
        if sizes[oid] > max_file_bytes:
            skipped[Skip.TOO_LARGE] += 1
        else:
            candidates.append((path, oid))
    return candidates, skipped


def _skip_by_entry(entry: _Entry) -> Skip | None:
    if entry.mode == "120000":
        return Skip.SYMLINK
    if entry.mode == "160000":
        return Skip.SUBMODULE
    try:
        path = entry.path.decode()
    except UnicodeDecodeError:
        return Skip.NOT_UTF8
    return skip_by_path(path)


def skip_by_path(path: str) -> Skip | None:
    """Why the file at ``path`` (from the repository's root) is not read, from its name alone."""
    *folders, name = path.lower().split("/")
    if any(folder in VENDORED_DIRS for folder in folders):
        return Skip.VENDORED
    if name in LOCK_FILE_NAMES or name.endswith(LOCK_FILE_SUFFIXES):
        return Skip.LOCK_FILE
    if name.endswith(GENERATED_SUFFIXES):
        return Skip.GENERATED
    if PurePosixPath(name).suffix in NON_TEXT_EXTENSIONS:
        return Skip.NON_TEXT_EXTENSION
    return None


def _sizes(cwd: Path, oids: set[str]) -> dict[str, int]:
    if not oids:
        return {}
    request = "".join(f"{oid}\n" for oid in sorted(oids)).encode()
    out = _git(["cat-file", "--batch-check"], cwd=cwd, timeout=LOCAL_TIMEOUT_S, stdin=request)
    sizes = {}
    for line in out.decode().splitlines():
        oid, _kind, size = line.split()
        sizes[oid] = int(size)
    return sizes


def _read_blobs(cwd: Path, oids: set[str]) -> dict[str, bytes]:
    """The content of each blob, in one ``git cat-file --batch`` for all of them."""
    if not oids:
        return {}
    request = "".join(f"{oid}\n" for oid in sorted(oids)).encode()
    out = _git(["cat-file", "--batch"], cwd=cwd, timeout=LOCAL_TIMEOUT_S, stdin=request)
    # Each answer: "<oid> <type> <size>\n", <size> bytes, "\n".
    blobs, position = {}, 0
    while position < len(out):
        header_end = out.index(b"\n", position)
        oid, _kind, size = out[position:header_end].decode().split()
        start = header_end + 1
        blobs[oid] = out[start : start + int(size)]
        position = start + int(size) + 1
    return blobs


def _text(data: bytes) -> str | Skip:
    """The file as text (NFC, otherwise untouched: code is whitespace-sensitive), or why not."""
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        return Skip.BINARY
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Skip.NOT_UTF8
    if not text.strip():
        return Skip.EMPTY
    if text.startswith(LFS_POINTER_PREFIX):
        return Skip.LFS_POINTER
    return unicodedata.normalize("NFC", text)


def language(path: str) -> str | None:
    """A language name for ``metadata["language"]``, from the file's name; None if unknown."""
    name = PurePosixPath(path).name.lower()
    return LANGUAGE_BY_EXTENSION.get(PurePosixPath(name).suffix) or LANGUAGE_BY_NAME.get(name)
