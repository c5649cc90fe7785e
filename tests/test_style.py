"""The style measures of floor 2: attribution, copying, repetition, noise, the reference set."""

from __future__ import annotations

import random

from style import attribution, copying, noise, reference, repetition

VOICE = ["kettle", "moorland", "drizzle", "indeed", "quietly", "lantern", "bramble", "~"]


def voice(rng: random.Random, words: int = 120) -> str:
    clauses = [" ".join(rng.choice(VOICE) for _ in range(8)) for _ in range(words // 8)]
    return " ~ ".join(clauses) + " ~"


def test_the_reference_set_is_several_writers_each_listed_with_its_licence() -> None:
    texts = reference.texts()
    writers = {t.writer for t in texts}
    assert len(writers) >= 6
    size = sum(len(t.text.encode()) for t in texts)
    assert 500_000 < size < 3_000_000
    sources = (reference.directory() / "SOURCES.md").read_text()
    for item in texts:
        assert f"{item.writer}/" in sources and f"{item.title}.txt" in sources, item.title


def test_attribution_tells_the_author_from_the_reference_writers() -> None:
    rng = random.Random(1)
    classifier = attribution.train([voice(rng) for _ in range(30)])
    held_out = [voice(rng, 60) for _ in range(10)]
    theirs = [
        t.text
        for t in reference.passages(
            reference.texts(), attribution.PASSAGE_CHARS, limit_per_writer=200
        )[-20:]
    ]
    assert classifier.share(held_out) == 1.0
    share = classifier.share(theirs)
    assert share is not None and share <= 0.1
    assert classifier.share([]) is None


def test_attribution_needs_writing_on_both_sides() -> None:
    try:
        attribution.train(["one short line"])
    except attribution.TooLittleText as error:
        assert "passages of the author's" in str(error)
    else:
        raise AssertionError("trained on a single line")


def test_copying_finds_the_longest_verbatim_run_and_the_8_gram_share() -> None:
    rng = random.Random(2)
    training = [voice(rng, 400) for _ in range(3)]
    source = copying.Source(training)
    words = training[1].split()
    recital = " ".join(words[100:160])
    fresh = " ".join(f"word{i}" for i in range(60))
    recited = source.measure([recital])
    assert recited.ngram8_overlap == 1.0
    assert recited.max_overlap_chars == len(recital)
    half = source.measure([f"{fresh} {recital}"])
    assert half.max_overlap_chars == len(recital)
    assert half.ngram8_overlap is not None and 0.4 < half.ngram8_overlap < 0.6
    assert source.measure([fresh]) == copying.Copying(0, 0.0)
    reason = copying.recites(recited.as_json(), {"ngram8_overlap": 0.05, "max_overlap_chars": 40})
    assert reason is not None and "8-grams" in reason
    assert copying.recites(source.measure([fresh]).as_json(), recited.as_json()) is None


def test_distinct_n_falls_when_a_text_loops() -> None:
    looped = "a greedy pattern is often misunderstood as a greedy pattern " * 6
    varied = " ".join(f"w{i}" for i in range(60))
    assert repetition.distinct([looped], 2) is not None
    assert repetition.distinct([looped], 2) < 0.3 < repetition.distinct([varied], 2) == 1.0  # type: ignore[operator]
    assert repetition.report(["one"]) == {"distinct_2": None, "distinct_3": None}


def test_the_bootstrap_measures_noise_and_the_tolerance_combines_it() -> None:
    assert noise.standard_error([0.5] * 10, lambda s: sum(s) / len(s)) == 0.0
    rng = random.Random(3)
    samples = [rng.random() for _ in range(40)]
    error = noise.standard_error(samples, lambda s: sum(s) / len(s))
    assert error is not None and 0.02 < error < 0.08  # about 0.29 / sqrt(40)
    assert noise.standard_error(samples, lambda s: sum(s) / len(s)) == error  # seeded
    assert noise.not_worse(0.70, 0.72, error, error)
    assert not noise.not_worse(0.50, 0.72, error, error)
    assert noise.tolerance(None, None) == 0.0
