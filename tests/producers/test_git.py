"""producers.git against real repositories built in the test: local paths and file:// clones."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.git import (
    PinnedRemote,
    RepositoryHarvest,
    Skip,
    canonical_repository_url,
    github_branch,
    is_remote,
    language,
    read_repository,
    skip_by_path,
)
from schemas.documents import Author, DocumentKind
from tests.producers.site import serve_git

AUTHOR = Author(slug="ada", display_name="Ada Lovelace")
CRAWLED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LIMIT = 1024  # max_file_bytes in these tests: big.txt is over it, everything else under

# The text files a reader should get, exactly as committed (whitespace included).
TEXT_FILES = {
    ".gitignore": "secret.env\n",
    "README.md": "# Notes\n\nWhat I learned this year.\n",
    "src/app/main.py": "def main() -> None:\n\tprint('tabs stay')  \n\n\n    # trailing\n",
    "docs/guide/intro.txt": "cafe\u0301 au lait\n",  # decomposed é: NFC-normalised on read
}
# Tracked files that must produce no document, and the reason each is counted under.
SKIPPED_FILES: dict[str, tuple[bytes, Skip]] = {
    "assets/logo.png": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01",
        Skip.NON_TEXT_EXTENSION,
    ),
    "data/blob.dat": (b"header\x00\x01\x02 text after a NUL", Skip.BINARY),
    "notes/latin1.txt": ("café crème".encode("latin-1"), Skip.NOT_UTF8),
    "package-lock.json": (b'{"lockfileVersion": 3}\n', Skip.LOCK_FILE),
    "deps.lock": (b"pinned==1.0\n", Skip.LOCK_FILE),
    "node_modules/left-pad/index.js": (b"module.exports = 1;\n", Skip.VENDORED),
    "web/node_modules/x/index.js": (b"module.exports = 2;\n", Skip.VENDORED),
    "dist/bundle.js": (b"console.log(1);\n", Skip.VENDORED),
    "static/app.min.js": (b"var a=1;\n", Skip.GENERATED),
    "big.txt": (b"word " * 400, Skip.TOO_LARGE),  # 2,000 bytes of real text
    "blank.txt": (b"  \n\t\n", Skip.EMPTY),
}
EXPECTED_SKIPS = {"symlink": 1} | {
    reason.value: sum(1 for _, r in SKIPPED_FILES.values() if r is reason)
    for _, reason in SKIPPED_FILES.values()
}
COMMITTED_AT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config (url rewrites, signing, hooks) may change the outcome."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)
    # Fixed commit time, given with an offset, to check published_at is converted to UTC.
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2024-05-01T12:00:00+02:00")


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=Ada", "-c", "user.email=ada@example.org", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def write(repo: Path, path: str, data: bytes | str) -> None:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        target.write_text(data, encoding="utf-8", newline="")
    else:
        target.write_bytes(data)


def commit(repo: Path, message: str, *paths: str) -> str:
    """Commit ``paths`` (all changes when none are named: the untracked scratch.txt stays out)."""
    git(repo, "add", *(["--", *paths] if paths else ["-A"]))
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "notes"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for path, text in TEXT_FILES.items():
        write(repo, path, text)
    for path, (data, _) in SKIPPED_FILES.items():
        write(repo, path, data)
    (repo / "link.md").symlink_to("README.md")
    write(repo, "secret.env", "TOKEN=do-not-read\n")  # ignored by .gitignore
    commit(repo, "first")
    write(repo, "scratch.txt", "untracked, never committed\n")
    return repo


def read(location: str | Path, workdir: Path, limit: int = LIMIT) -> RepositoryHarvest:
    return read_repository(
        str(location), AUTHOR, workdir=workdir, crawled_at=CRAWLED_AT, max_file_bytes=limit
    )


def versions(harvest: RepositoryHarvest) -> dict[str, tuple[str, str]]:
    return {d.title: (str(d.document_id), d.content_hash) for d in harvest.documents}


def test_one_document_per_text_file_and_every_other_file_counted(
    repo: Path, tmp_path: Path
) -> None:
    harvest = read(repo, tmp_path / "work")

    assert harvest.failures == []
    by_path = {d.title: d for d in harvest.documents}
    assert sorted(by_path) == sorted(TEXT_FILES)
    assert harvest.skipped == EXPECTED_SKIPS
    head = git(repo, "rev-parse", "HEAD")
    repository = repo.as_uri()  # no origin remote: the checkout is its own identity
    for path, document in by_path.items():
        assert document.kind is DocumentKind.REPOSITORY_FILE
        assert document.platform == "git"
        assert document.canonical_source == f"{repository}#{path}"
        assert document.source_url is None
        assert document.published_at == COMMITTED_AT
        assert document.crawled_at == CRAWLED_AT
        assert document.metadata == {
            "repository": repository,
            "path": path,
            "commit": head,
            "language": language(path),
        }
    assert by_path["src/app/main.py"].content == TEXT_FILES["src/app/main.py"]
    assert by_path["src/app/main.py"].metadata["language"] == "python"
    assert by_path["README.md"].metadata["language"] == "markdown"
    assert by_path["docs/guide/intro.txt"].content == "caf\u00e9 au lait\n"


def test_reads_are_stable(repo: Path, tmp_path: Path) -> None:
    first = read(repo, tmp_path / "work")
    second = read(repo, tmp_path / "work")

    assert versions(first) == versions(second)
    assert len({d.document_id for d in first.documents}) == len(TEXT_FILES)


def test_a_clone_and_a_checkout_of_one_repository_give_the_same_documents(
    repo: Path, tmp_path: Path
) -> None:
    url = repo.as_uri()
    git(repo, "remote", "add", "origin", url)

    local = read(repo, tmp_path / "work")
    cloned = read(url, tmp_path / "work")

    assert local.failures == cloned.failures == []
    assert versions(local) == versions(cloned)
    assert len(local.documents) == len(TEXT_FILES)
    assert {d.title: d.metadata for d in local.documents} == {
        d.title: d.metadata for d in cloned.documents
    }
    assert {d.canonical_source for d in cloned.documents} == {f"{url}#{p}" for p in TEXT_FILES}
    assert local.skipped == cloned.skipped == EXPECTED_SKIPS


def test_a_new_commit_changes_only_the_changed_file(repo: Path, tmp_path: Path) -> None:
    before = read(repo, tmp_path / "work")
    write(repo, "src/app/main.py", "def main() -> None:\n    return None\n")
    new_head = commit(repo, "second", "src/app/main.py")
    after = read(repo, tmp_path / "work")

    assert_only_main_py_changed(before, after, new_head)


def test_a_recrawl_fetches_into_the_same_clone(repo: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    url = repo.as_uri()
    before = read(url, workdir)
    (clone,) = workdir.iterdir()
    (clone / "marker").write_text("a re-clone would remove this")

    write(repo, "src/app/main.py", "def main() -> None:\n    return None\n")
    new_head = commit(repo, "second", "src/app/main.py")
    after = read(url, workdir)

    assert list(workdir.iterdir()) == [clone]
    assert (clone / "marker").exists()
    assert_only_main_py_changed(before, after, new_head)


def assert_only_main_py_changed(
    before: RepositoryHarvest, after: RepositoryHarvest, new_head: str
) -> None:
    old, new = versions(before), versions(after)
    assert old.keys() == new.keys() == TEXT_FILES.keys()
    changed = {path for path in old if old[path][1] != new[path][1]}
    assert changed == {"src/app/main.py"}
    assert all(old[path][0] == new[path][0] for path in old)  # ids never change
    assert {d.metadata["commit"] for d in after.documents} == {new_head}
    assert {d.metadata["commit"] for d in before.documents} != {new_head}


def test_a_filtering_server_never_sends_the_oversize_blob(repo: Path, tmp_path: Path) -> None:
    git(repo, "config", "uploadpack.allowFilter", "true")
    workdir = tmp_path / "work"
    harvest = read(repo.as_uri(), workdir)

    (clone,) = workdir.iterdir()
    big = git(repo, "rev-parse", "HEAD:big.txt")
    missing = git(clone, "rev-list", "--objects", "--missing=print", "--no-walk", "HEAD")
    assert f"?{big}" in missing.splitlines()
    assert harvest.skipped == EXPECTED_SKIPS
    assert sorted(d.title for d in harvest.documents) == sorted(TEXT_FILES)


def test_a_larger_limit_than_the_clone_was_made_with_reads_the_larger_files(
    repo: Path, tmp_path: Path
) -> None:
    git(repo, "config", "uploadpack.allowFilter", "true")
    workdir = tmp_path / "work"
    read(repo.as_uri(), workdir, limit=LIMIT)
    harvest = read(repo.as_uri(), workdir, limit=4 * LIMIT)

    big = [d for d in harvest.documents if d.title == "big.txt"]
    assert [d.content for d in big] == [(b"word " * 400).decode()]
    assert "too_large" not in harvest.skipped


def test_a_github_url_with_a_branch_reads_that_branch(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git(repo, "checkout", "-q", "-b", "feature/drafts")
    write(repo, "docs/my notes.md", "Only on the branch.\n")
    branch_head = commit(repo, "draft", "docs/my notes.md")
    git(repo, "checkout", "-q", "main")
    # Offline: git rewrites the GitHub clone URL to the local repository.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{repo.as_uri()}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://github.com/Octo-Org/Notes.git")

    harvest = read("https://github.com/Octo-Org/Notes/tree/feature/drafts", tmp_path / "work")

    assert harvest.failures == []
    by_path = {d.title: d for d in harvest.documents}
    assert sorted(by_path) == sorted([*TEXT_FILES, "docs/my notes.md"])
    draft = by_path["docs/my notes.md"]
    assert draft.platform == "github"
    assert draft.canonical_source == "https://github.com/Octo-Org/Notes#docs/my notes.md"
    assert draft.source_url == (
        f"https://github.com/Octo-Org/Notes/blob/{branch_head}/docs/my%20notes.md"
    )
    assert draft.metadata["repository"] == "https://github.com/Octo-Org/Notes"
    assert draft.metadata["commit"] == branch_head


def test_a_folder_inside_a_work_tree_reads_only_that_folder(repo: Path, tmp_path: Path) -> None:
    whole = versions(read(repo, tmp_path / "work"))
    part = versions(read(repo / "src", tmp_path / "work"))

    assert part == {"src/app/main.py": whole["src/app/main.py"]}


@pytest.mark.parametrize(
    "spelling",
    [
        "https://github.com/Octo-Org/My.Repo",
        "https://github.com/Octo-Org/My.Repo/",
        "https://github.com/Octo-Org/My.Repo.git",
        "https://github.com/Octo-Org/My.Repo/tree/main",
        "https://github.com/Octo-Org/My.Repo/tree/feature/x",
        "http://www.GitHub.com/Octo-Org/My.Repo.git/",
        "https://token@github.com/Octo-Org/My.Repo.git",
        "  https://GITHUB.COM/Octo-Org/My.Repo#readme ",
        "git@github.com:Octo-Org/My.Repo.git",
        "ssh://git@github.com/Octo-Org/My.Repo.git",
        "git://github.com/Octo-Org/My.Repo",
    ],
)
def test_every_spelling_of_a_github_repository_is_one_url(spelling: str) -> None:
    assert canonical_repository_url(spelling) == "https://github.com/Octo-Org/My.Repo"


@pytest.mark.parametrize(
    ("location", "canonical"),
    [
        ("https://GitLab.com/Group/Sub/Proj.git", "https://gitlab.com/Group/Sub/Proj"),
        (
            "https://alice:s3cret@git.example.org:443/team/proj/",
            "https://git.example.org/team/proj",
        ),
        ("http://git.example.org:8080/proj.git", "http://git.example.org:8080/proj"),
        ("git@gitlab.com:group/proj.git", "ssh://gitlab.com/group/proj"),
        ("ssh://git@Host.Example:22/a/b.git", "ssh://host.example/a/b"),
        ("ssh://git@host.example:2222/a/b.git", "ssh://host.example:2222/a/b"),
        ("file:///srv/git/proj.git", "file:///srv/git/proj"),
        ("file:///srv/git/my%20proj/", "file:///srv/git/my%20proj"),
    ],
)
def test_other_repository_urls(location: str, canonical: str) -> None:
    assert canonical_repository_url(location) == canonical


def test_branches_and_locations_are_told_apart() -> None:
    assert github_branch("https://github.com/o/r/tree/feature/x") == "feature/x"
    assert github_branch("https://github.com/o/r") is None
    assert github_branch("https://gitlab.com/o/r/tree/dev") is None
    assert [is_remote(x) for x in ["git@host:o/r", "file:///r", "/srv/r", "./a:b", "r"]] == [
        True,
        True,
        False,
        False,
        False,
    ]
    for not_a_repository in ["https://github.com/only-owner", "/srv/r", "https:///path"]:
        with pytest.raises(ValueError, match="not a"):
            canonical_repository_url(not_a_repository)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("src/main.py", None),
        ("docs/building.md", None),
        ("Build/out.js", Skip.VENDORED),
        ("a/b/vendor/c/lib.go", Skip.VENDORED),
        ("pkg/__pycache__/m.py", Skip.VENDORED),
        ("Cargo.lock", Skip.LOCK_FILE),
        ("app/go.sum", Skip.LOCK_FILE),
        ("proto/user_pb2.py", Skip.GENERATED),
        ("static/site.css.map", Skip.GENERATED),
        ("img/Photo.JPG", Skip.NON_TEXT_EXTENSION),
        ("models/twin.safetensors", Skip.NON_TEXT_EXTENSION),
    ],
)
def test_path_rules(path: str, reason: Skip | None) -> None:
    assert skip_by_path(path) == reason


def test_language_names() -> None:
    assert [language(p) for p in ["a/b.py", "x.TS", "Dockerfile", "notes", "data.csv"]] == [
        "python",
        "typescript",
        "dockerfile",
        None,
        None,
    ]


def test_a_folder_that_is_not_a_repository_is_a_failure(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("not in git\n")

    harvest = read(plain, tmp_path / "work")
    absent = read(tmp_path / "absent", tmp_path / "work")

    assert harvest.documents == absent.documents == []
    assert [f.source for f in harvest.failures] == [str(plain)]
    assert "not a git work tree" in harvest.failures[0].reason
    assert "no such directory" in absent.failures[0].reason


def test_a_repository_without_commits_is_a_failure(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")

    harvest = read(empty, tmp_path / "work")

    assert harvest.documents == []
    assert "no commit at HEAD" in harvest.failures[0].reason


def test_a_clone_that_fails_is_a_failure_with_gits_reason(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    url = (tmp_path / "nowhere").as_uri()

    harvest = read(url, workdir)

    assert harvest.documents == []
    assert [f.source for f in harvest.failures] == [url]
    assert "git clone failed" in harvest.failures[0].reason
    assert "does not appear to be a git repository" in harvest.failures[0].reason
    assert list(workdir.iterdir()) == []  # no half-made clone left behind


def test_credentials_never_reach_a_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for proxy in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]:
        monkeypatch.delenv(proxy, raising=False)
    # Nothing listens on port 1: refused at once, no network needed.
    harvest = read("https://alice:s3cret@127.0.0.1:1/team/proj.git", tmp_path / "work")

    (failure,) = harvest.failures
    assert "s3cret" not in failure.source
    assert "s3cret" not in failure.reason
    assert "127.0.0.1" in failure.reason


def test_a_token_as_the_user_name_never_reaches_a_failure(tmp_path: Path) -> None:
    token = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"
    # Nothing listens on port 1: refused at once, no network needed.
    harvest = read(f"https://{token}@127.0.0.1:1/team/proj.git", tmp_path / "work")

    (failure,) = harvest.failures
    assert token not in failure.source
    assert token not in failure.reason
    assert failure.source == "https://***@127.0.0.1:1/team/proj.git"


def test_a_pinned_clone_connects_to_the_vetted_address_under_the_name(
    repo: Path, tmp_path: Path
) -> None:
    served = tmp_path / "served"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(served / "notes.git"))
    # The server is on 127.0.0.2 only, where `localhost` never resolves: reaching it
    # proves git connected to the pinned address, not to a fresh lookup of the name.
    with serve_git(served, "127.0.0.2") as (port, hosts):
        pinned = PinnedRemote("localhost", port, ("127.0.0.2",))
        harvest = read_repository(
            f"http://localhost:{port}/notes.git",
            AUTHOR,
            workdir=tmp_path / "work",
            crawled_at=CRAWLED_AT,
            max_file_bytes=LIMIT,
            pinned=pinned,
        )
        unpinned = read(f"http://localhost:{port}/notes.git", tmp_path / "other")

    assert harvest.failures == []
    assert {d.title for d in harvest.documents} == TEXT_FILES.keys()
    assert set(hosts) == {f"localhost:{port}"}  # the server saw the name, not the address
    assert "git clone failed" in unpinned.failures[0].reason  # the name alone leads elsewhere
