"""Bucket batches over HTTP (issue 27): POST /batches (the API token; not a reviewer's),
GET /batches (`?ended_within_s=N`: only the open ones and those ended in the last N
seconds) and /batches/{id} with its progress, DELETE /batches/{id} (`?purge=true`
deletes the keys this batch wrote), GET /batches/{id}/failures, POST
/batches/{id}/retry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imageblur.batches.model import Batch, BatchItem, BatchRefused, is_batch_id, pace
from imageblur.batches.rules import FILE_SCHEME
from imageblur.batches.service import BatchService
from imageblur.bootstrap import Container
from imageblur.domain import NotFound, utcnow
from imageblur.entrypoints.errors import Rejected
from imageblur.entrypoints.json_body import MAX_BATCH_BYTES, read_json
from imageblur.entrypoints.middleware.auth import role_of

router = APIRouter()
MAX_PAGE = 100
# `?ended_within_s=`: open batches and those ended this recently (the page's section);
# a week at most, beyond which the plain listing serves.
MAX_ENDED_WITHIN_S = 7 * 24 * 3600


async def _batches(request: Request) -> BatchService:
    container: Container = request.app.state.container
    if container.batches is None:  # pragma: no cover - every container has them
        raise NotFound("batches are not served here")
    if role_of(request.scope) not in (None, "api"):
        raise Rejected(403, "forbidden", "batches take the API token")
    return container.batches


Batches = Annotated[BatchService, Depends(_batches)]


def _known(batch_id: str) -> str:
    if not is_batch_id(batch_id):
        raise NotFound(f"no batch {batch_id}")
    return batch_id


def _where(store: str, bucket: str, prefix: str) -> dict[str, str]:
    shown = f"{FILE_SCHEME}{bucket}" if store == "file" else bucket
    return {"bucket": shown, "prefix": prefix}


def shown(batch: Batch, root: str = "") -> dict[str, Any]:
    """A batch as the API shows it: where, how far, and its links."""
    c = batch.counts
    speed = pace(batch, utcnow())
    return {
        "id": batch.id,
        "status": batch.status,
        "source": _where(batch.source.store, batch.source.bucket, batch.source.prefix),
        "target": _where(batch.target.store, batch.target.bucket, batch.target.prefix),
        # As an upload's: its `callback_url` among its options (kept apart inside).
        "options": dict(batch.options)
        | ({"callback_url": batch.callback_url} if batch.callback_url else {}),
        "dry_run": batch.dry_run,
        "total": batch.total,
        "listed": c.listed,
        "queued": c.queued,
        "done": c.done,
        "failed": c.failed,
        "skipped": dict(c.skipped),
        "faces": c.faces,
        "throughput_per_s": round(speed.per_s, 3),
        "eta_s": round(speed.eta_s) if speed.eta_s is not None else None,
        "error": batch.error,
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        "url": f"{root}/batches/{batch.id}",
        "failures_url": f"{root}/batches/{batch.id}/failures",
    }


def _failure(item: BatchItem) -> dict[str, Any]:
    return {"key": item.source_key, "reason": item.reason, "attempts": item.attempts}


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


# The body as OpenAPI shows it: read by `read_json`, not by FastAPI (which has no cap).
_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The batch: `source` and `target` (`{bucket, prefix}`), `options`, "
        f"`dry_run`; at most {MAX_BATCH_BYTES // 1024} KiB of JSON.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post("/batches", status_code=202, response_model=None, openapi_extra=_BATCH_BODY)
async def post_batch(request: Request, batches: Batches) -> JSONResponse:
    body = await read_json(request, max_bytes=MAX_BATCH_BYTES, what="a batch")
    if not isinstance(body, dict):
        raise BatchRefused(
            'the body must be a JSON object: {"source": ..., "target": ...}',
            http_status=422,
            code="invalid_batch",
        )
    batch, created = await run_in_threadpool(batches.submit, body)
    location = f"{_root(request)}/batches/{batch.id}"
    return JSONResponse(
        shown(batch, _root(request)),
        status_code=202 if created else 200,
        headers={"Location": location},
    )


@router.get("/batches", response_model=None)
async def list_batches(
    request: Request,
    batches: Batches,
    limit: Annotated[int, Query(ge=1)] = 20,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    ended_within_s: Annotated[int | None, Query(ge=0, le=MAX_ENDED_WITHIN_S)] = None,
) -> dict[str, Any]:
    found = await run_in_threadpool(
        batches.list, limit=min(limit, MAX_PAGE), offset=offset, ended_within_s=ended_within_s
    )
    return {"items": [shown(b, _root(request)) for b in found], "limit": limit, "offset": offset}


@router.get("/batches/{batch_id}", response_model=None)
async def get_batch(request: Request, batches: Batches, batch_id: str) -> dict[str, Any]:
    return shown(await run_in_threadpool(batches.get, _known(batch_id)), _root(request))


@router.delete("/batches/{batch_id}", response_model=None)
async def delete_batch(
    request: Request, batches: Batches, batch_id: str, purge: bool = False
) -> dict[str, Any]:
    stopped = await run_in_threadpool(batches.cancel, _known(batch_id), purge=purge)
    return shown(stopped, _root(request))


@router.get("/batches/{batch_id}/failures", response_model=None)
async def get_failures(
    batches: Batches,
    batch_id: str,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: str | None = None,
) -> dict[str, Any]:
    limit = min(limit, 1000)
    items = await run_in_threadpool(batches.failures, _known(batch_id), limit=limit, after=after)
    last = items[-1].source_key if len(items) == limit else None
    return {"items": [_failure(i) for i in items], "next_after": last}


@router.post("/batches/{batch_id}/retry", status_code=202, response_model=None)
async def retry_batch(batches: Batches, batch_id: str) -> dict[str, Any]:
    retried = await run_in_threadpool(batches.retry, _known(batch_id))
    return {"retried": retried}
