"""The SQLite adapter's schema: its versioned migrations, kept apart from the queries
(`sqlite_repo`) so that the table layout reads in one place. A Python module, not `.sql`
files: it ships inside the wheel with no package-data declaration."""

from __future__ import annotations

from collections.abc import Sequence

# A line of a generated migration ends by this column at the latest: the width the
# released text was written to.
_WIDTH = 93
# The columns of `images` as its rebuilds declare them, in order: each rebuild has a
# prefix of them, and copies the prefix the table had before it (status: its CHECK is the
# rebuild's own).
_IMAGE_COLUMNS = (
    "id TEXT PRIMARY KEY",
    "name TEXT NOT NULL",
    "url TEXT",
    None,
    "content_type TEXT NOT NULL",
    "bytes INTEGER NOT NULL",
    "width INTEGER NOT NULL",
    "height INTEGER NOT NULL",
    "input_key TEXT NOT NULL",
    "output_key TEXT",
    "faces INTEGER",
    "plates INTEGER",
    "error TEXT",
    "attempts INTEGER NOT NULL DEFAULT 0",
    "lease_owner TEXT",
    "lease_expires_at TEXT",
    "idempotency_key TEXT UNIQUE",
    "request_id TEXT",
    "published_at TEXT",
    "created_at TEXT NOT NULL",
    "updated_at TEXT NOT NULL",
    "review TEXT CHECK (review IN ('pending','approved','expired'))",
    "revision INTEGER NOT NULL DEFAULT 0",
    "held_until TEXT",
    "regions TEXT",
    "error_code TEXT",
    "body_sha256 TEXT",
    "kind TEXT NOT NULL DEFAULT 'picture' CHECK (kind IN ('picture','video'))",
    "duration_s REAL",
    "fps REAL",
    "frames INTEGER",
    "video_codec TEXT",
    "audio TEXT CHECK (audio IN ('kept','reencoded','none'))",
    "frames_done INTEGER",
    "frames_total INTEGER",
    "eta_s REAL",
    "tracks_key TEXT",
    "options TEXT",
)
_IMAGE_INDEXES = """
    CREATE INDEX images_created ON images (created_at DESC, id DESC);
    CREATE INDEX images_kind_created ON images (kind, created_at DESC, id DESC);
    CREATE INDEX images_status ON images (status, updated_at);
    CREATE INDEX images_pending_created ON images (created_at) WHERE status = 'pending';
    CREATE INDEX images_held ON images (held_until) WHERE status = 'review';
    """
_STATUSES_V6 = ("pending", "processing", "done", "failed", "review", "rendering")
_STATUSES_V8 = (*_STATUSES_V6, "video_pending", "video_processing")
_STATUSES_V11 = (*_STATUSES_V8, "options_pending", "options_processing", "options_rendering")
_STATUSES_V12 = (*_STATUSES_V11, "video_options_pending", "video_options_processing")


def _rebuild_images(version: int, statuses: Sequence[str], *, columns: int, copied: int) -> str:
    """Migration `version`, a rebuild of `images` to change its status CHECK (SQLite
    cannot alter one) to `statuses`, with its first `columns` columns, the first `copied`
    copied from the table it replaces, and the indexes made again: the text that release
    shipped, to the byte (tests/unit/test_sqlite_schema.py pins it)."""
    table = f"images_v{version}"
    quoted = [f"'{status}'" for status in statuses]
    check = _wrap("        status TEXT NOT NULL CHECK (status IN (", quoted, ",", "            ")
    lines = [check + "))," if c is None else f"        {c}," for c in _IMAGE_COLUMNS[:columns]]
    insert = f"    INSERT INTO {table} ("
    names = [(c or "status").split()[0] for c in _IMAGE_COLUMNS[:copied]]
    listed = _wrap(insert, names, ", ", "        ").removeprefix(insert)
    return (
        f"\n    CREATE TABLE {table} (\n"
        + "\n".join(lines).removesuffix(",")
        + f"\n    );\n{insert}{listed})\n    SELECT {listed} FROM images;\n"
        + f"    DROP TABLE images;\n    ALTER TABLE {table} RENAME TO images;"
        + _IMAGE_INDEXES
    )


def _wrap(first: str, items: Sequence[str], sep: str, indent: str, width: int = _WIDTH) -> str:
    """`items` after `first`, separated by `sep`; a line is broken (then `indent`) before
    an item that would take it past `width`, its trailing separator counted."""
    lines, line = [], first
    for item in items:
        if line not in (first, indent) and len(line + item + sep.rstrip()) > width:
            lines.append(line.rstrip())
            line = indent
        line += item + sep
    return "\n".join([*lines, line.removesuffix(sep)])


# The columns of `batches` as its CREATE statements declare them, in order (the status:
# its CHECK is the statement's own), and the indexes made with it.
_BATCH_COLUMNS = (
    ("id", "text PRIMARY KEY"),
    ("batch_key", "text NOT NULL"),
    ("source_store", "text NOT NULL CHECK (source_store IN ('s3', 'file'))"),
    ("source_bucket", "text NOT NULL"),
    ("source_prefix", "text NOT NULL"),
    ("target_store", "text NOT NULL CHECK (target_store IN ('s3', 'file'))"),
    ("target_bucket", "text NOT NULL"),
    ("target_prefix", "text NOT NULL"),
    ("options", "text NOT NULL"),
    ("dry_run", "integer NOT NULL"),
    ("status", None),
    ("listing_after", "text"),
    ("listed_all", "integer NOT NULL DEFAULT 0"),
    ("error", "text"),
    ("created_at", "text NOT NULL"),
    ("updated_at", "text NOT NULL"),
    ("finished_at", "text"),
    ("callback_url", "text"),
    ("pace_minute", "bigint NOT NULL DEFAULT 0"),
    ("pace_n", "bigint NOT NULL DEFAULT 0"),
    ("pace_prev", "bigint NOT NULL DEFAULT 0"),
)
_BATCH_INDEXES = """
    CREATE UNIQUE INDEX batches_key ON batches (batch_key)
        WHERE status <> 'cancelled';
    CREATE INDEX batches_created ON batches (created_at DESC, id DESC);
    """
_BATCH_STATUSES_V14 = ("listing", "running", "done", "cancelled", "failed")
_BATCH_STATUSES_V18 = (*_BATCH_STATUSES_V14, "callback_listing", "callback_running")
# Migration 18's column list was written to this width (one line of 98 columns).
_BATCH_INSERT_WIDTH = 98


def _batches_table(table: str, statuses: Sequence[str], *, columns: int) -> str:
    """The CREATE statement of `batches` (named `table`) with its first `columns`
    columns and `statuses` in its status CHECK: migration 14 creates the table with
    it, a rebuild (`_rebuild_batches`) its replacement."""
    quoted = [f"'{status}'" for status in statuses]
    check = _wrap(" " * 22 + "CHECK (status IN (", quoted, ", ", " " * 40)
    lines = [
        f"        {name:<13} " + (f"text NOT NULL\n{check}))," if decl is None else f"{decl},")
        for name, decl in _BATCH_COLUMNS[:columns]
    ]
    return f"\n    CREATE TABLE {table} (\n" + "\n".join(lines).removesuffix(",") + "\n    );"


def _rebuild_batches(version: int, statuses: Sequence[str], *, columns: int) -> str:
    """Migration `version`, a rebuild of `batches` to change its status CHECK (SQLite
    cannot alter one) to `statuses`, every one of its first `columns` columns copied:
    the text that release shipped, to the byte (tests/unit/test_sqlite_schema.py)."""
    table = f"batches_v{version}"
    insert = f"    INSERT INTO {table} SELECT "
    names = [name for name, _ in _BATCH_COLUMNS[:columns]]
    listed = _wrap(insert, names, ", ", "        ", _BATCH_INSERT_WIDTH)
    return (
        _batches_table(table, statuses, columns=columns)
        + f"\n{listed} FROM batches;\n"
        + f"    DROP TABLE batches;\n    ALTER TABLE {table} RENAME TO batches;"
        + _BATCH_INDEXES
    )


# Versioned migrations: append only, never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        url TEXT,
        status TEXT NOT NULL CHECK (status IN ('pending','processing','done','failed')),
        content_type TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        input_key TEXT NOT NULL,
        output_key TEXT,
        faces INTEGER,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at TEXT,
        idempotency_key TEXT UNIQUE,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX images_created ON images (created_at DESC, id DESC);
    CREATE INDEX images_status ON images (status, updated_at);
    """,
    """
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    """,
    """
    ALTER TABLE images ADD COLUMN published_at TEXT;
    """,
    """
    ALTER TABLE images ADD COLUMN request_id TEXT;
    CREATE INDEX images_pending_created ON images (created_at) WHERE status = 'pending';
    """,
    """
    ALTER TABLE images ADD COLUMN plates INTEGER;
    """,
    # 6: review and correct. A table rebuild (SQLite cannot alter a CHECK): the status
    # check gains 'review' and 'rendering'; the review hold, the regions' revision and
    # the regions themselves (JSON text, read only by `regions()`, so lists stay light);
    # the audit trail. Every existing row is copied: review NULL, revision 0, no regions.
    # Written out, not `_rebuild_images`: its CHECK is wrapped otherwise and it makes other
    # indexes.
    """
    CREATE TABLE images_v6 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        url TEXT,
        status TEXT NOT NULL CHECK (status IN
            ('pending','processing','done','failed','review','rendering')),
        content_type TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        input_key TEXT NOT NULL,
        output_key TEXT,
        faces INTEGER,
        plates INTEGER,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_owner TEXT,
        lease_expires_at TEXT,
        idempotency_key TEXT UNIQUE,
        request_id TEXT,
        published_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        review TEXT CHECK (review IN ('pending','approved','expired')),
        revision INTEGER NOT NULL DEFAULT 0,
        held_until TEXT,
        regions TEXT
    );
    INSERT INTO images_v6 (id, name, url, status, content_type, bytes, width, height,
        input_key, output_key, faces, plates, error, attempts, lease_owner, lease_expires_at,
        idempotency_key, request_id, published_at, created_at, updated_at)
    SELECT id, name, url, status, content_type, bytes, width, height,
        input_key, output_key, faces, plates, error, attempts, lease_owner, lease_expires_at,
        idempotency_key, request_id, published_at, created_at, updated_at FROM images;
    DROP TABLE images;
    ALTER TABLE images_v6 RENAME TO images;
    CREATE INDEX images_created ON images (created_at DESC, id DESC);
    CREATE INDEX images_status ON images (status, updated_at);
    CREATE INDEX images_pending_created ON images (created_at) WHERE status = 'pending';
    CREATE INDEX images_held ON images (held_until) WHERE status = 'review';
    CREATE TABLE image_events (
        seq INTEGER PRIMARY KEY,
        image_id TEXT NOT NULL,
        at TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        status TEXT NOT NULL,
        revision INTEGER NOT NULL,
        detail TEXT
    );
    CREATE INDEX image_events_image ON image_events (image_id, seq);
    """,
    # 7: the error's code beside its public text (NULL beside an error: a row of an older
    # release, read as internal_error); the digest an idempotency key is bound to (NULL:
    # an older release's, counted as a match).
    """
    ALTER TABLE images ADD COLUMN error_code TEXT;
    ALTER TABLE images ADD COLUMN body_sha256 TEXT;
    """,
    # 8: videos. A table rebuild (SQLite cannot alter a CHECK): the status check gains
    # the video job's own statuses; the record's kind (every existing row a picture),
    # a video's facts, sound and progress; lists by kind from their own index.
    _rebuild_images(8, _STATUSES_V8, columns=36, copied=27),
    # 9: a done video's tracks object in the results store (NULL: none, and every row of
    # an older release).
    """
    ALTER TABLE images ADD COLUMN tracks_key TEXT;
    """,
    # 10: the webhook outbox (docs/operations.md, "Webhooks"): one row per event to send,
    # written in the transaction of the status change; no foreign key, so that a later
    # rebuild of `images` (SQLite's way to alter a CHECK) cannot take the rows with it:
    # `delete` removes them with their record.
    """
    CREATE TABLE webhook_outbox (
        id TEXT PRIMARY KEY,
        image_id TEXT NOT NULL,
        event TEXT NOT NULL,
        url TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        lease_owner TEXT,
        lease_expires_at TEXT,
        outcome TEXT CHECK (outcome IN ('delivered','given_up')),
        finished_at TEXT,
        last_error TEXT
    );
    CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE outcome IS NULL;
    CREATE INDEX webhook_outbox_image ON webhook_outbox (image_id, created_at);
    """,
    # 11: options per upload. A table rebuild (SQLite cannot alter a CHECK): the status
    # check gains the statuses of the job kinds `options` and `options_render`; the
    # upload's options, as JSON (NULL: none, every existing row).
    _rebuild_images(11, _STATUSES_V11, columns=38, copied=37),
    # 12: options per upload for videos. A table rebuild again (the status check): the
    # statuses of the job kind `video_options`.
    _rebuild_images(12, _STATUSES_V12, columns=38, copied=38),
    # 13: the webhook outbox: the operator's rows flagged (sent to the sender's current
    # IMAGEBLUR_WEBHOOK_URL; those written before are not) and finished rows swept.
    """
    ALTER TABLE webhook_outbox ADD COLUMN to_operator INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX webhook_outbox_finished ON webhook_outbox (finished_at)
        WHERE outcome IS NOT NULL;
    """,
    # 14: bucket batches (issue 27): a batch, and its items in a table of their own,
    # never in `images` (no picture listing, gauge or original's deletion reaches an
    # item; its source is borrowed: `borrowed` is 1 by a CHECK); one batch per key until
    # it is cancelled (a post of the same batch answers it); partial indexes for the
    # listed items waiting to be published, leased ones, failed ones, done item keys (a
    # later batch skips them) and the keys a batch wrote (its purge).
    _batches_table("batches", _BATCH_STATUSES_V14, columns=17)
    + _BATCH_INDEXES
    + """CREATE TABLE batch_items (
        id               text PRIMARY KEY,
        batch_id         text NOT NULL,
        item_key         text NOT NULL,
        source_store     text NOT NULL,
        source_bucket    text NOT NULL,
        source_key       text NOT NULL,
        source_tag       text NOT NULL,
        source_size      bigint NOT NULL,
        borrowed         integer NOT NULL DEFAULT 1 CHECK (borrowed = 1),
        state            text NOT NULL CHECK (state IN
                         ('listed', 'queued', 'processing', 'done', 'failed', 'skipped')),
        target_key       text,
        wrote_target     integer NOT NULL DEFAULT 0,
        reason           text,
        faces            integer,
        attempts         integer NOT NULL DEFAULT 0,
        lease_owner      text,
        lease_expires_at text,
        created_at       text NOT NULL,
        updated_at       text NOT NULL
    );
    CREATE UNIQUE INDEX batch_items_source ON batch_items (batch_id, source_key);
    CREATE INDEX batch_items_state ON batch_items (batch_id, state);
    CREATE INDEX batch_items_listed ON batch_items (batch_id, source_key)
        WHERE state = 'listed';
    CREATE INDEX batch_items_leased ON batch_items (lease_expires_at)
        WHERE state = 'processing';
    CREATE INDEX batch_items_done_key ON batch_items (item_key) WHERE state = 'done';
    CREATE INDEX batch_items_failed ON batch_items (batch_id, source_key)
        WHERE state = 'failed';
    CREATE INDEX batch_items_written ON batch_items (batch_id, target_key)
        WHERE wrote_target = 1;
    """,
    # 15: a batch's own `callback_url` (its `batch.done` goes there, not to the
    # operator's IMAGEBLUR_WEBHOOK_URL); NULL for every earlier batch.
    """
    ALTER TABLE batches ADD COLUMN callback_url text;
    """,
    # 16: a batch item's target marks: what each attempt marked the object it was about
    # to write with (space-separated), so a retry knows an earlier attempt's result as
    # its own (nullable: the previous release neither writes nor reads it).
    """
    ALTER TABLE batch_items ADD COLUMN target_marks text;
    """,
    # 17: a batch's counts kept as its items change (in the same transaction), so reading
    # a batch costs the same at a million items as at ten: `batch_counts` holds, per
    # batch, how many items are in each state (`queued` counting the running ones too)
    # and skipped for each reason, with their faces; the batch's row holds the
    # items ended in its current and previous minute (its pace). Filled from the items
    # of the batches there are (new tables: no earlier release writes them).
    """
    CREATE TABLE batch_counts (
        batch_id text NOT NULL,
        state    text NOT NULL,
        reason   text NOT NULL DEFAULT '',
        n        bigint NOT NULL DEFAULT 0,
        faces    bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, state, reason)
    );
    INSERT INTO batch_counts (batch_id, state, reason, n, faces)
        SELECT batch_id, CASE WHEN state = 'processing' THEN 'queued' ELSE state END,
            CASE WHEN state = 'skipped' THEN COALESCE(reason, '') ELSE '' END,
            COUNT(*), COALESCE(SUM(CASE WHEN state = 'done' THEN faces ELSE 0 END), 0)
        FROM batch_items GROUP BY 1, 2, 3;
    ALTER TABLE batches ADD COLUMN pace_minute bigint NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN pace_n bigint NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN pace_prev bigint NOT NULL DEFAULT 0;
    """,
    # 18: a batch with its own `callback_url` is open as `callback_listing` and
    # `callback_running`, statuses no earlier release knows (so none of its pods ends it
    # and sends its `batch.done` to the operator's URL): the status CHECK gains them, by
    # a rebuild of `batches` (SQLite cannot alter a CHECK; one row per batch).
    _rebuild_batches(18, _BATCH_STATUSES_V18, columns=21),
)
# The version this release needs (`check`) and migrates to.
LATEST = len(MIGRATIONS)
