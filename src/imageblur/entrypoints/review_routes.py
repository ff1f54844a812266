"""The review routes: a picture's regions (read, correct), its approval and its audit
trail. Corrections and approval need a named reviewer's token, always: the role and the
name are checked here, on the server, from what the token check recorded."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imageblur import corrections
from imageblur.bootstrap import Container
from imageblur.domain import Region
from imageblur.entrypoints.errors import Rejected
from imageblur.entrypoints.json_body import MAX_CORRECTION_BYTES, read_json
from imageblur.entrypoints.middleware.auth import reviewer_of, role_of
from imageblur.entrypoints.routes import Root
from imageblur.entrypoints.schemas import (
    EventOut,
    History,
    Picture,
    RegionList,
    RegionOut,
    errors,
    picture,
)
from imageblur.review import ReviewService

router = APIRouter()
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


async def _review(request: Request) -> ReviewService:  # async: no thread hop
    container: Container = request.app.state.container
    return container.review


Review = Annotated[ReviewService, Depends(_review)]


def _reviewer(request: Request) -> str:
    """The name of the reviewer making a correction or approval: 401 without a token,
    403 for the API token's. Never anyone when no reviewer token is set."""
    name = reviewer_of(request.scope)
    if name is not None:
        return name
    if role_of(request.scope) == "api":
        raise Rejected(
            403, "forbidden", "this needs a reviewer's token (IMAGEBLUR_REVIEWER_TOKENS)"
        )
    raise Rejected(
        401,
        "unauthorized",
        "correcting and approving need a reviewer's token (IMAGEBLUR_REVIEWER_TOKENS), "
        "sent as 'Authorization: Bearer <token>'",
    )


def _etag(revision: int) -> dict[str, str]:
    return {"ETag": f'"{revision}"', "Cache-Control": "no-store"}


def _revision(if_match: str | None) -> int:
    if if_match is None:
        raise Rejected(
            428, "if_match_required", 'send If-Match: "<revision>" of the regions you edited'
        )
    match = _ETAG.fullmatch(if_match.strip())
    if match is None:
        raise Rejected(412, "stale_revision", f"If-Match {if_match!r} is not a revision")
    return int(match.group(1))


def _regions_out(revision: int, regions: list[Region]) -> dict[str, Any]:
    items = [RegionOut(**r.to_dict()) for r in regions]
    return RegionList(revision=revision, regions=items).model_dump(mode="json")


@router.get(
    "/picture/{image_id}/regions",
    response_model=RegionList,
    responses=errors(401, 404, 503),
    summary="Every region hidden, and the uncertain candidates, with the revision (ETag)",
)
async def get_regions(review: Review, image_id: str) -> JSONResponse:
    revision, regions = await run_in_threadpool(review.regions, image_id)
    return JSONResponse(_regions_out(revision, list(regions)), headers=_etag(revision))


@router.put(
    "/picture/{image_id}/regions",
    status_code=202,
    response_model=Picture,
    responses=errors(400, 401, 403, 404, 409, 412, 413, 422, 428, 503),
    summary="Correct the regions (the complete list wanted); the result is re-rendered",
)
async def put_regions(
    request: Request,
    review: Review,
    root: Root,
    image_id: str,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> JSONResponse:
    reviewer = _reviewer(request)
    expected = _revision(if_match)
    wanted = corrections.parse(
        await read_json(request, max_bytes=MAX_CORRECTION_BYTES, what="a correction")
    )
    record = await run_in_threadpool(
        review.correct,
        image_id,
        wanted,
        expected_revision=expected,
        role="reviewer",
        reviewer=reviewer,
    )
    body = picture(record, root).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers=_etag(record.revision))


@router.post(
    "/picture/{image_id}/approve",
    response_model=Picture,
    responses=errors(401, 403, 404, 409, 503),
    summary="Release a picture held for review: done, and its original deleted",
)
async def approve(request: Request, review: Review, root: Root, image_id: str) -> Picture:
    reviewer = _reviewer(request)
    record = await run_in_threadpool(review.approve, image_id, role="reviewer", reviewer=reviewer)
    return picture(record, root)


@router.get(
    "/picture/{image_id}/history",
    response_model=History,
    responses=errors(401, 404, 503),
    summary="The picture's audit trail, oldest first",
)
async def history(review: Review, image_id: str) -> History:
    events = await run_in_threadpool(review.history, image_id)
    return History(events=[EventOut.model_validate(e, from_attributes=True) for e in events])
