"""The adapter registry in the real warehouse: the activation policy, activate and rollback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymongo.database import Database

from infra import adapters as registry
from infra import warehouse
from schemas.training import AdapterRegistered


@pytest.fixture
def db(mongodb_uri: str) -> Iterator[Database[warehouse.Document]]:
    client = warehouse.connect(mongodb_uri)
    try:
        yield client["registry_tests"]
    finally:
        client.close()


def adapter(author: str, name: str, perplexity: float | None) -> AdapterRegistered:
    return AdapterRegistered(
        adapter_id=f"{author}-{name}",
        author=author,
        snapshot_id=f"{author}-20261130T000000Z-0000000{len(name) % 10}",
        base_model="tiny",
        path=f"/adapters/{author}-{name}",
        created_at=datetime.now(UTC),
        config_hash="0" * 64,
        eval_perplexity=perplexity,
    )


def test_a_new_adapter_is_served_only_if_not_worse(db: Database[warehouse.Document]) -> None:
    author = f"ann-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    assert registry.register(db, adapter(author, "first", 12.0), now)
    assert not registry.register(db, adapter(author, "worse", 15.0), now)
    active = registry.active(db, author)
    assert active is not None and active.adapter_id == f"{author}-first"
    assert not registry.register(db, adapter(author, "unmeasured", None), now)
    assert registry.register(db, adapter(author, "better", 9.5), now)
    assert registry.active_ids(db)[author] == f"{author}-better"
    # The same event seen again (a replay, a second worker) changes nothing.
    assert registry.register(db, adapter(author, "better", 9.5), now)
    listed = registry.adapters_of(db, author)
    assert [r.adapter.adapter_id.rsplit("-", 1)[1] for r in listed] == [
        "first",
        "worse",
        "unmeasured",
        "better",
    ]
    assert [r.active for r in listed] == [False, False, False, True]


def test_a_person_activates_and_rolls_back(db: Database[warehouse.Document]) -> None:
    author = f"bo-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    registry.register(db, adapter(author, "one", 10.0), now)
    registry.register(db, adapter(author, "two", 20.0), now)  # worse: kept inactive
    registry.activate(db, f"{author}-two")  # a person's choice overrides the scores
    assert registry.active_ids(db)[author] == f"{author}-two"
    back = registry.rollback(db, author)
    assert back is not None and back.adapter_id == f"{author}-one"
    assert registry.rollback(db, author) is None  # the base model answers now
    assert author not in registry.active_ids(db)
    with pytest.raises(registry.UnknownAdapter):
        registry.rollback(db, author)
    with pytest.raises(registry.UnknownAdapter):
        registry.activate(db, "no-such-adapter")


def _on_disk(root: Path, author: str, name: str) -> AdapterRegistered:
    directory = root / f"{author}-{name}"
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text('{"r": 4}')
    (directory / "adapter_model.safetensors").write_bytes(b"weights")
    return adapter(author, name, 3.0).model_copy(update={"path": str(directory)})


def test_serving_loads_only_the_files_the_trainer_recorded_under_the_adapters_directory(
    db: Database[warehouse.Document], tmp_path: Path
) -> None:
    root = tmp_path / "adapters"
    author = f"ben-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    good = _on_disk(root, author, "good")
    registry.register(db, good, now)
    assert registry.verified_path(db, good.adapter_id, root) == Path(good.path).resolve()

    changed = _on_disk(root, author, "changed")
    registry.register(db, changed, now)
    Path(changed.path, "adapter_model.safetensors").write_bytes(b"someone else's weights")
    added = _on_disk(root, author, "added")
    registry.register(db, added, now)
    Path(added.path, "extra.safetensors").write_bytes(b"more")
    outside = _on_disk(tmp_path / "elsewhere", author, "outside")
    registry.register(db, outside, now)
    linked = _on_disk(root, author, "linked")
    registry.register(db, linked, now)
    Path(linked.path, "adapter_model.safetensors").unlink()
    Path(linked.path, "adapter_model.safetensors").symlink_to(tmp_path / "elsewhere")
    for refused, reason in (
        (changed, "not the ones its trainer recorded"),
        (added, "not the ones its trainer recorded"),
        (outside, "outside"),
        (linked, "is a link"),
    ):
        with pytest.raises(registry.AdapterRefused, match=reason):
            registry.verified_path(db, refused.adapter_id, root)
    with pytest.raises(registry.UnknownAdapter):
        registry.verified_path(db, f"{author}-never-recorded", root)
