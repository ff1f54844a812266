"""The PostgreSQL adapter's schema: its versioned migrations, kept apart from the queries
(`postgres_repo`) so that the table layout reads in one place. A Python module, not `.sql`
files: it ships inside the wheel with no package-data declaration."""

from __future__ import annotations

# Versioned migrations: append, never edit. `{s}` is the schema identifier.
MIGRATIONS: tuple[str, ...] = (
    # 1: the image table with the original system's `name` and `url` columns.
    """
    CREATE TABLE {s}.images (
        id               text PRIMARY KEY,
        name             text NOT NULL,
        status           text NOT NULL
                         CHECK (status IN ('pending', 'processing', 'done', 'failed')),
        content_type     text NOT NULL,
        bytes            bigint NOT NULL,
        width            integer NOT NULL,
        height           integer NOT NULL,
        input_key        text NOT NULL,
        output_key       text,
        url              text,
        faces            integer,
        error            text,
        attempts         integer NOT NULL DEFAULT 0,
        lease_owner      text,
        lease_expires_at timestamptz,
        idempotency_key  text UNIQUE,
        created_at       timestamptz NOT NULL,
        updated_at       timestamptz NOT NULL
    );
    CREATE INDEX images_created_idx ON {s}.images (created_at DESC, id DESC);
    CREATE INDEX images_open_idx ON {s}.images (status, updated_at)
        WHERE status IN ('pending', 'processing');
    """,
    # 2: an append-only audit trail of state changes.
    """
    CREATE TABLE {s}.image_transitions (
        seq         bigserial PRIMARY KEY,
        image_id    text NOT NULL,
        from_status text,
        to_status   text NOT NULL,
        owner       text,
        at          timestamptz NOT NULL
    );
    CREATE INDEX image_transitions_image_idx ON {s}.image_transitions (image_id);
    """,
    # 3: named leases for maintenance that one process out of many should run.
    """
    CREATE TABLE {s}.leases (
        name       text PRIMARY KEY,
        owner      text NOT NULL,
        expires_at timestamptz NOT NULL
    );
    """,
    # 4: when the job's message was confirmed by the broker (NULL: not, or not yet).
    """
    ALTER TABLE {s}.images ADD COLUMN published_at timestamptz;
    """,
    # 5: the upload's request id; the oldest pending picture found without a scan.
    """
    ALTER TABLE {s}.images ADD COLUMN request_id text;
    CREATE INDEX images_pending_created_idx ON {s}.images (created_at)
        WHERE status = 'pending';
    """,
    # 6: licence plates hidden, apart from faces (NULL: not done yet).
    """
    ALTER TABLE {s}.images ADD COLUMN plates integer;
    """,
    # 7: review and correct. The status check gains 'review' and 'rendering' (NOT VALID:
    # every existing row passed the old, narrower check, so no scan under the table lock);
    # the review hold, the regions' revision and the regions themselves (JSON text, read
    # only by `regions()`, so lists stay light); the picture's audit trail; the open-jobs
    # index covers renders, and a held picture is found by when its hold ends.
    """
    ALTER TABLE {s}.images DROP CONSTRAINT images_status_check;
    ALTER TABLE {s}.images ADD CONSTRAINT images_status_check CHECK (status IN
        ('pending', 'processing', 'done', 'failed', 'review', 'rendering')) NOT VALID;
    ALTER TABLE {s}.images
        ADD COLUMN review     text CHECK (review IN ('pending', 'approved', 'expired')),
        ADD COLUMN revision   integer NOT NULL DEFAULT 0,
        ADD COLUMN held_until timestamptz,
        ADD COLUMN regions    text;
    CREATE TABLE {s}.image_events (
        seq      bigserial PRIMARY KEY,
        image_id text NOT NULL,
        at       timestamptz NOT NULL,
        role     text NOT NULL,
        action   text NOT NULL,
        status   text NOT NULL,
        revision integer NOT NULL,
        detail   text
    );
    CREATE INDEX image_events_image_idx ON {s}.image_events (image_id, seq);
    DROP INDEX {s}.images_open_idx;
    CREATE INDEX images_open_idx ON {s}.images (status, updated_at)
        WHERE status IN ('pending', 'processing', 'rendering');
    CREATE INDEX images_held_idx ON {s}.images (held_until) WHERE status = 'review';
    """,
    # 8: the error's code beside its public text (NULL beside an error: a row of an older
    # release, read as internal_error); the digest an idempotency key is bound to (NULL:
    # an older release's, counted as a match). Nullable without a default: no rewrite.
    """
    ALTER TABLE {s}.images
        ADD COLUMN error_code  text,
        ADD COLUMN body_sha256 text;
    """,
    # 9: videos. The status check gains the video job's own statuses (NOT VALID, as in
    # 7); the record's kind (a default: every existing row a picture, no rewrite since
    # PostgreSQL 11), a video's facts, sound and progress (nullable: no rewrite); the
    # open-jobs index covers video jobs; lists by kind from their own index.
    """
    ALTER TABLE {s}.images DROP CONSTRAINT images_status_check;
    ALTER TABLE {s}.images ADD CONSTRAINT images_status_check CHECK (status IN
        ('pending', 'processing', 'done', 'failed', 'review', 'rendering',
         'video_pending', 'video_processing')) NOT VALID;
    ALTER TABLE {s}.images
        ADD COLUMN kind         text NOT NULL DEFAULT 'picture'
                                CHECK (kind IN ('picture', 'video')),
        ADD COLUMN duration_s   double precision,
        ADD COLUMN fps          double precision,
        ADD COLUMN frames       integer,
        ADD COLUMN video_codec  text,
        ADD COLUMN audio        text CHECK (audio IN ('kept', 'reencoded', 'none')),
        ADD COLUMN frames_done  integer,
        ADD COLUMN frames_total integer,
        ADD COLUMN eta_s        double precision;
    DROP INDEX {s}.images_open_idx;
    CREATE INDEX images_open_idx ON {s}.images (status, updated_at)
        WHERE status IN ('pending', 'processing', 'rendering', 'video_pending',
                         'video_processing');
    CREATE INDEX images_kind_created_idx ON {s}.images (kind, created_at DESC, id DESC);
    """,
    # 10: a done video's tracks object in the results store (NULL: none, and every row
    # of an older release). Nullable without a default: no rewrite.
    """
    ALTER TABLE {s}.images ADD COLUMN tracks_key text;
    """,
    # 11: the webhook outbox (docs/operations.md, "Webhooks"): one row per event to send,
    # written in the transaction of the status change, taken by the senders with
    # FOR UPDATE SKIP LOCKED; `delete` removes the rows with their record.
    """
    CREATE TABLE {s}.webhook_outbox (
        id               text PRIMARY KEY,
        image_id         text NOT NULL,
        event            text NOT NULL,
        url              text NOT NULL,
        created_at       timestamptz NOT NULL,
        attempts         integer NOT NULL DEFAULT 0,
        next_attempt_at  timestamptz NOT NULL,
        lease_owner      text,
        lease_expires_at timestamptz,
        outcome          text CHECK (outcome IN ('delivered', 'given_up')),
        finished_at      timestamptz,
        last_error       text
    );
    CREATE INDEX webhook_outbox_due_idx ON {s}.webhook_outbox (next_attempt_at)
        WHERE outcome IS NULL;
    CREATE INDEX webhook_outbox_image_idx ON {s}.webhook_outbox (image_id, created_at);
    """,
    # 12: options per upload. The status check gains the statuses of the job kinds
    # `options` and `options_render` (NOT VALID, as in 7); the upload's options as JSON
    # text (nullable: no rewrite); the open-jobs index covers their jobs.
    """
    ALTER TABLE {s}.images DROP CONSTRAINT images_status_check;
    ALTER TABLE {s}.images ADD CONSTRAINT images_status_check CHECK (status IN
        ('pending', 'processing', 'done', 'failed', 'review', 'rendering',
         'video_pending', 'video_processing', 'options_pending', 'options_processing',
         'options_rendering')) NOT VALID;
    ALTER TABLE {s}.images ADD COLUMN options text;
    DROP INDEX {s}.images_open_idx;
    CREATE INDEX images_open_idx ON {s}.images (status, updated_at)
        WHERE status IN ('pending', 'processing', 'rendering', 'video_pending',
                         'video_processing', 'options_pending', 'options_processing',
                         'options_rendering');
    """,
    # 13: options per upload for videos: the status check and the open-jobs index gain
    # the statuses of the job kind `video_options` (NOT VALID, as in 7).
    """
    ALTER TABLE {s}.images DROP CONSTRAINT images_status_check;
    ALTER TABLE {s}.images ADD CONSTRAINT images_status_check CHECK (status IN
        ('pending', 'processing', 'done', 'failed', 'review', 'rendering',
         'video_pending', 'video_processing', 'options_pending', 'options_processing',
         'options_rendering', 'video_options_pending', 'video_options_processing')) NOT VALID;
    DROP INDEX {s}.images_open_idx;
    CREATE INDEX images_open_idx ON {s}.images (status, updated_at)
        WHERE status IN ('pending', 'processing', 'rendering', 'video_pending',
                         'video_processing', 'options_pending', 'options_processing',
                         'options_rendering', 'video_options_pending',
                         'video_options_processing');
    """,
    # 14: the webhook outbox: the operator's rows flagged (sent to the sender's current
    # IMAGEBLUR_WEBHOOK_URL; those written before are not; a constant default: no
    # rewrite) and finished rows swept (by their finish time).
    """
    ALTER TABLE {s}.webhook_outbox ADD COLUMN to_operator boolean NOT NULL DEFAULT false;
    CREATE INDEX webhook_outbox_finished_idx ON {s}.webhook_outbox (finished_at)
        WHERE outcome IS NOT NULL;
    """,
    # 15: bucket batches (issue 27): a batch, and its items in a table of their own,
    # never in `images` (no picture listing, gauge or original's deletion reaches an
    # item; its source is borrowed: `borrowed` is 1 by a CHECK); one batch per key until
    # it is cancelled (a post of the same batch answers it); partial indexes for the
    # listed items waiting to be published, leased ones, failed ones, done item keys (a
    # later batch skips them) and the keys a batch wrote (its purge).
    """
    CREATE TABLE {s}.batches (
        id            text PRIMARY KEY,
        batch_key     text NOT NULL,
        source_store  text NOT NULL CHECK (source_store IN ('s3', 'file')),
        source_bucket text NOT NULL,
        source_prefix text NOT NULL,
        target_store  text NOT NULL CHECK (target_store IN ('s3', 'file')),
        target_bucket text NOT NULL,
        target_prefix text NOT NULL,
        options       text NOT NULL,
        dry_run       integer NOT NULL,
        status        text NOT NULL
                      CHECK (status IN ('listing', 'running', 'done', 'cancelled', 'failed')),
        listing_after text,
        listed_all    integer NOT NULL DEFAULT 0,
        error         text,
        created_at    timestamptz NOT NULL,
        updated_at    timestamptz NOT NULL,
        finished_at   timestamptz
    );
    CREATE UNIQUE INDEX batches_key ON {s}.batches (batch_key)
        WHERE status <> 'cancelled';
    CREATE INDEX batches_created ON {s}.batches (created_at DESC, id DESC);
    CREATE TABLE {s}.batch_items (
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
        lease_expires_at timestamptz,
        created_at       timestamptz NOT NULL,
        updated_at       timestamptz NOT NULL
    );
    CREATE UNIQUE INDEX batch_items_source ON {s}.batch_items (batch_id, source_key);
    CREATE INDEX batch_items_state ON {s}.batch_items (batch_id, state);
    CREATE INDEX batch_items_listed ON {s}.batch_items (batch_id, source_key)
        WHERE state = 'listed';
    CREATE INDEX batch_items_leased ON {s}.batch_items (lease_expires_at)
        WHERE state = 'processing';
    CREATE INDEX batch_items_done_key ON {s}.batch_items (item_key) WHERE state = 'done';
    CREATE INDEX batch_items_failed ON {s}.batch_items (batch_id, source_key)
        WHERE state = 'failed';
    CREATE INDEX batch_items_written ON {s}.batch_items (batch_id, target_key)
        WHERE wrote_target = 1;
    """,
    # 16: a batch's own `callback_url` (its `batch.done` goes there, not to the
    # operator's IMAGEBLUR_WEBHOOK_URL); NULL for every earlier batch.
    """
    ALTER TABLE {s}.batches ADD COLUMN callback_url text;
    """,
    # 17: a batch item's target marks: what each attempt marked the object it was about
    # to write with (space-separated), so a retry knows an earlier attempt's result as
    # its own (nullable: the previous release neither writes nor reads it).
    """
    ALTER TABLE {s}.batch_items ADD COLUMN target_marks text;
    """,
    # 18: a batch's counts kept as its items change (in the same transaction), so reading
    # a batch costs the same at a million items as at ten: `batch_counts` holds, per
    # batch, how many items are in each state (`queued` counting the running ones too)
    # and skipped for each reason, with their faces; the batch's row holds the
    # items ended in its current and previous minute (its pace). Filled from the items
    # of the batches there are (new tables: no earlier release writes them).
    """
    CREATE TABLE {s}.batch_counts (
        batch_id text NOT NULL,
        state    text NOT NULL,
        reason   text NOT NULL DEFAULT '',
        n        bigint NOT NULL DEFAULT 0,
        faces    bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, state, reason)
    );
    INSERT INTO {s}.batch_counts (batch_id, state, reason, n, faces)
        SELECT batch_id, CASE WHEN state = 'processing' THEN 'queued' ELSE state END,
            CASE WHEN state = 'skipped' THEN COALESCE(reason, '') ELSE '' END,
            COUNT(*), COALESCE(SUM(CASE WHEN state = 'done' THEN faces ELSE 0 END), 0)
        FROM {s}.batch_items GROUP BY 1, 2, 3;
    ALTER TABLE {s}.batches ADD COLUMN pace_minute bigint NOT NULL DEFAULT 0;
    ALTER TABLE {s}.batches ADD COLUMN pace_n bigint NOT NULL DEFAULT 0;
    ALTER TABLE {s}.batches ADD COLUMN pace_prev bigint NOT NULL DEFAULT 0;
    """,
    # 19: a batch with its own `callback_url` is open as `callback_listing` and
    # `callback_running`, statuses no earlier release knows (so none of its pods ends it
    # and sends its `batch.done` to the operator's URL): the status check gains them
    # (NOT VALID, as in 7).
    """
    ALTER TABLE {s}.batches DROP CONSTRAINT batches_status_check;
    ALTER TABLE {s}.batches ADD CONSTRAINT batches_status_check CHECK (status IN
        ('listing', 'running', 'done', 'cancelled', 'failed', 'callback_listing',
         'callback_running')) NOT VALID;
    """,
)
# The version this release needs (`check`) and migrates to.
LATEST = len(MIGRATIONS)
