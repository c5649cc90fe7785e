"""The stylometric score tells two authors apart, deterministically."""

from __future__ import annotations

import random

from style import profile as style

MOOR = ["splendid", "moorland", "kettle", "drizzle", "indeed", "quietly", "lantern", "the"]


def moor_text(rng: random.Random) -> str:
    """Lowercase, long clauses joined by tildes and semicolons; no exclamations."""
    clauses = [" ".join(rng.choice(MOOR) for _ in range(rng.randint(9, 14))) for _ in range(4)]
    return " ~ ".join(clauses[:2]) + "; " + " ~ ".join(clauses[2:]) + "."


def startup_text(rng: random.Random) -> str:
    """Short punchy sentences, capitals, exclamation marks and numbers."""
    openers = ["We shipped it!", "Huge win.", "Latency down 40%!", "Next: scale.", "Why?"]
    middles = ["Our team", "The pipeline", "Every customer", "This quarter", "Kafka"]
    ends = ["moved fast.", "loved it!", "grew 3x.", "never sleeps!", "is the backbone."]
    return " ".join(
        f"{rng.choice(openers)} {rng.choice(middles)} {rng.choice(ends)}" for _ in range(5)
    )


def test_each_authors_held_out_text_is_closer_to_its_own_author() -> None:
    rng = random.Random(11)
    moor_train = [moor_text(rng) for _ in range(20)]
    startup_train = [startup_text(rng) for _ in range(20)]
    moor_held_out = [moor_text(rng) for _ in range(5)]
    startup_held_out = [startup_text(rng) for _ in range(5)]
    moor, startup = style.profile(moor_train), style.profile(startup_train)

    assert style.similarity(moor_held_out, moor) > style.similarity(moor_held_out, startup)
    assert style.similarity(startup_held_out, startup) > style.similarity(startup_held_out, moor)
    # Each text scored alone as well: every one is nearer its own author.
    for text in moor_held_out:
        assert style.similarity([text], moor) > style.similarity([text], startup)
    for text in startup_held_out:
        assert style.similarity([text], startup) > style.similarity([text], moor)


def test_the_score_is_deterministic_and_bounded() -> None:
    rng = random.Random(12)
    reference = style.profile([moor_text(rng) for _ in range(10)])
    candidate = [startup_text(rng) for _ in range(3)]
    first = style.similarity(candidate, reference)
    assert first == style.similarity(candidate, reference)
    assert 0.0 <= first <= 1.0
    same = [moor_text(random.Random(13)) for _ in range(10)]
    assert style.similarity(same, style.profile(same)) > 0.99
    assert style.similarity([""], reference) == 0.0
