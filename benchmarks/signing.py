"""What signing costs a message, next to encoding it; prints one JSON object.

    .venv/bin/python benchmarks/signing.py [--rounds 7] [--messages 2000]

For documents of 1 KiB, 64 KiB and 1 MiB of content, each round times encoding
``--messages`` RawDocuments (what every producer does anyway), then signing and
verifying each encoded message (what a signing key adds on both sides). The
ratio, signing + verifying over encoding, is measured within one round (these
machines drift); the report gives its median and spread over the rounds.

It exits 0 whatever the numbers: a benchmark reports, it does not fail CI.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from datetime import UTC, datetime

from schemas.documents import Author, DocumentKind, RawDocument
from schemas.serde import encode
from schemas.signing import Signer
from schemas.topics import RAW_DOCUMENTS


def _document(size: int) -> RawDocument:
    now = datetime.now(UTC)
    return RawDocument.build(
        author=Author(slug="bench", display_name="Bench"),
        kind=DocumentKind.ARTICLE,
        platform="substack",
        canonical_source=f"https://bench.example/{size}",
        source_url=f"https://bench.example/{size}",
        title="A benchmark",
        content="The twin writes in its author's voice. " * (size // 40),
        published_at=now,
        crawled_at=now,
    )


def _round(document: RawDocument, signer: Signer, messages: int) -> tuple[float, float]:
    key = str(document.document_id)
    started = time.perf_counter()
    values = [encode(document) for _ in range(messages)]
    encoded = time.perf_counter() - started
    started = time.perf_counter()
    for value in values:
        headers = signer.sign(RAW_DOCUMENTS.name, key, value, [("author", "bench")])
        signer.verify(RAW_DOCUMENTS.name, key.encode(), value, headers)
    return encoded, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args()
    signer = Signer(secrets.token_bytes(32))
    report: dict[str, object] = {"rounds": args.rounds}
    for size in (1024, 64 * 1024, 1024 * 1024):
        document = _document(size)
        messages = max(20, args.messages * 1024 // size)
        ratios, per_message_us = [], []
        for _ in range(args.rounds):
            encoded, signed = _round(document, signer, messages)
            ratios.append(signed / encoded)
            per_message_us.append(signed / messages * 1e6)
        report[f"{size}_bytes"] = {
            "messages_per_round": messages,
            "sign_and_verify_over_encode_median": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "ratio_max": round(max(ratios), 3),
            "sign_and_verify_us_per_message_median": round(statistics.median(per_message_us), 1),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
