"""What a pod of release 557906e (the one that brought bucket batches) runs on a batch and
its items, frozen here: its pump's read of the open batches and its listing check, the
statements by which its pump, its workers and its API take an item or end a batch
(`adapters/sql_batches` as it was; each ended batch got its `batch.done` row, to the
operator's URL, in the same transaction), with `{t}` for the schema's prefix and
parameters written `:name` (see `previous_release.sql`). Each returns the ids only,
where the release returned its rows' columns: the rows it takes are the same.

Do NOT update this file when those statements change: a batch this release keeps from
557906e's pods must stay out of reach of exactly these. `previous_release.py` holds the
older release's picture conditions, which 557906e kept.
"""

from __future__ import annotations

_OPEN = "('listing', 'running')"

# The pump's pass: the batches it lists (those `listing`), tops up and re-publishes.
OPEN_BATCHES = f"SELECT id FROM {{t}}batches WHERE status IN {_OPEN}"
# `add_items`: a page is stored only while the batch is listing.
LISTING = "SELECT id FROM {t}batches WHERE id = :id AND status = 'listing'"
# A worker's claim of an item (the message's `image_id`); none: it acks and drops it.
CLAIM_ITEM = (
    "UPDATE {t}batch_items SET state = 'processing', lease_owner = :owner, "
    "lease_expires_at = :until, attempts = attempts + 1, updated_at = :now "
    "WHERE id = :id AND (state IN ('listed', 'queued') OR (state = 'processing' "
    "AND lease_expires_at <= :now)) AND batch_id IN "
    f"(SELECT id FROM {{t}}batches WHERE status IN {_OPEN}) RETURNING id"
)
# A worker's end of the item it holds (done, failed, skipped, or back to queued); it
# writes no kept count (`batch_counts` came after it).
FINISH_ITEM = (
    "UPDATE {t}batch_items SET state = :state, reason = :reason, faces = :faces, "
    "target_key = COALESCE(:target_key, target_key), "
    "wrote_target = CASE WHEN :wrote = 1 THEN 1 ELSE wrote_target END, "
    "lease_owner = NULL, lease_expires_at = NULL, updated_at = :now "
    "WHERE id = :id AND state = 'processing' AND lease_owner = :owner RETURNING id"
)
# The pump's re-publishing of items whose lease lapsed or whose message is long lost.
REQUEUE_STALE_ITEMS = (
    "UPDATE {t}batch_items SET state = 'queued', lease_owner = NULL, "
    "lease_expires_at = NULL, updated_at = :now WHERE id IN (SELECT id FROM "
    "{t}batch_items WHERE (state = 'processing' AND lease_expires_at <= :now) OR "
    "(state = 'queued' AND updated_at <= :before) LIMIT :limit) AND batch_id IN "
    f"(SELECT id FROM {{t}}batches WHERE status IN {_OPEN}) RETURNING id"
)
# The statements that end a batch; each id returned got a `batch.done` row.
SETTLE_BATCHES = (
    "UPDATE {t}batches SET status = 'done', finished_at = :now, "
    f"updated_at = :now WHERE status IN {_OPEN} AND listed_all = 1 AND NOT "
    "EXISTS (SELECT 1 FROM {t}batch_items i WHERE i.batch_id = {t}batches.id "
    "AND i.state IN ('listed', 'queued', 'processing')) RETURNING id"
)
FAIL_BATCH = (
    "UPDATE {t}batches SET status = 'failed', error = :error, finished_at = :now, "
    f"updated_at = :now WHERE id = :id AND status IN {_OPEN} RETURNING id"
)
CANCEL_BATCH = (
    "UPDATE {t}batches SET status = 'cancelled', finished_at = :now, "
    f"updated_at = :now WHERE id = :id AND status IN {_OPEN} RETURNING id"
)
