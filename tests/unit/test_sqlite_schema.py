"""SQLite's migrations are never edited once released: a database migrated by an older
release and a new one must hold the same schema, and SQLite keeps each CREATE's text as
written. Some are generated (`sqlite_schema._rebuild_images`, `_batches_table`): each
migration's digest is pinned, so that a change to a generator that alters a released
text fails here."""

from __future__ import annotations

import hashlib

from imageblur.adapters.sqlite_schema import MIGRATIONS

RELEASED_SHA256 = (
    "2b17e234d5995f590e182f48b21138fa994635503cdcffd45d5e900c384fa5ba",
    "959eac0c659a267ca509746c77c4acfaec08b75b54c6506e2de9631aa3dd5f17",
    "415aa80e20159016d6db187fd2f54cf3153fb385a88ffa243033384e481363bd",
    "65ef2ddfa2d48a32bfc8bd3da188c2d4ca41d7596041506f7e2357a229f3f556",
    "2f00e05f6dc5b39d460632527444f1afeab69d6e24854e62bb302a14562a4b57",
    "78d9f672ff4e67e2e7f357b60ae2ad51a4f87df9b245e0462cab0ee2fa2d28fc",
    "efc90568713a1853d850e00b3c1655f27f427a4707d29b1e495d133f33f8cdd2",
    "dda91d5e712779d3d0f49bde3b92296afa36b7920d012079141b651a7f702448",
    "0e8928fd25d565d0b3c06e610e24299b9165d2121a1c25f3afcde001f2685efb",
    "3211d7aafa04aeabe0c4500964ad2b32dbe6ccaf1dafa5fa47c2264c1f0a911e",
    "df4b8eabd95ec2814855dfd970978525c1f753fefb15b62bda44730d4ae5e321",
    "9479eaa8e96ce850e7a1df18a4c65b52a95ed147d63033d6a56442f9f2729248",
    "373f18313792d9f5613bf19ce4f4b48378062895e9a222fffc1c79cb8c28595c",
    "f854134d32c71fa88f768ae5cb0ec6c8e0dba8a4f03aa208c7da7823ca3e167c",
)


# The migrations after 557906e's, pinned too: 14 and 18 share a generator
# (`_batches_table`), so that a change to it that alters 18 fails here. A pin here may
# change only while no release has shipped its migration.
SINCE_557906E_SHA256 = (
    "8eab24ed1c42f2cc4f9b7e1c88b6840d458247b51738d3f0a9d68e48ce926bc5",
    "92bf0815a1c5beeaef28d7fa99ea0d9e9d1591c69f28fcabde882c4d91d694e1",
    "e1a6a4b8f342caf7fbf31e580df15d0b2e44bcccb74b4a6ed51519bacfdb09b7",
    "1fffd3114d40952a66072dae4d063a57eeffde8b65c44ecb91d9753d4e7e7baf",
)


def test_released_migrations_keep_their_text() -> None:
    released = MIGRATIONS[: len(RELEASED_SHA256)]
    digests = [hashlib.sha256(m.encode()).hexdigest() for m in released]
    pinned = zip(digests, RELEASED_SHA256, strict=True)
    changed = [n for n, (digest, pin) in enumerate(pinned, 1) if digest != pin]
    assert changed == [], f"released migrations edited: {changed}"


def test_migrations_since_557906e_keep_their_text() -> None:
    since = MIGRATIONS[len(RELEASED_SHA256) : len(RELEASED_SHA256) + len(SINCE_557906E_SHA256)]
    digests = [hashlib.sha256(m.encode()).hexdigest() for m in since]
    assert digests == list(SINCE_557906E_SHA256)
