"""The routes (Starlette): the conversion API, jobs, health, metrics, the page.

Every conversion request takes the same path: the token, the options (the
CLI's parsers), the announced size, a place in the queue, the body to a spool
file, the header probe and footprint (anime_cli.single), then the admission
queue (admission.py). Whatever happens, it gets one JSON error with one line
or its picture, and one record in the log.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import re
import sys
import time
import uuid
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from anime_cli.errors import first_line
from anime_cli.logs.telemetry import Record
from . import body
from .admission import Ticket
from .log import ServedRecord
from .metrics import peak_rss
from .params import OptionError, request_options
from .service import Service

# What a record's reason is answered with (anything else that failed: 422).
STATUS_OF_REASON = {
    "not an image": 415, "unsupported format": 415, "corrupt or not an image": 415, "corrupt header": 415,
    "not a still picture": 415, "too many pixels": 422, "empty image": 422, "corrupt data": 422,
    "truncated data": 422, "file too large": 413, "empty file": 400, "out of memory": 503,
    "network failed": 500, "unexpected error": 500,
}
class Refused(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers or {}


def build_app(service: Service) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        service.loop = asyncio.get_running_loop()
        if service.banner:
            print(service.banner, file=sys.stderr, flush=True)
        yield
        service.begin_shutdown()
        left = max(0.0, service.config.grace - (time.monotonic() - service.stopped_at))
        await run_in_threadpool(service.close, left)

    app = Starlette(routes=[
        Route("/", page), Route("/app.js", page), Route("/app.css", page),
        Route("/healthz", healthz), Route("/metrics", metrics), Route("/v1/info", info),
        Route("/v1/convert", convert, methods=["POST"]), Route("/v1/jobs", submit_job, methods=["POST"]),
        Route("/v1/jobs/{job_id}", job_status), Route("/v1/jobs/{job_id}/result", job_result),
    ], lifespan=lifespan)
    app.state.service = service
    return app


# -- small routes --------------------------------------------------------------
async def page(request: Request) -> Response:
    data, kind = request.app.state.service.page[request.url.path]
    return Response(data, media_type=kind, headers={"Cache-Control": "no-cache"})


async def healthz(request: Request) -> Response:
    svc = request.app.state.service
    return JSONResponse({"status": "stopping" if svc.stopping else "ok", "queue": svc.admission.depth,
                         "in_flight": svc.admission.in_flight})


async def info(request: Request) -> Response:
    svc = request.app.state.service
    b = svc.base
    return JSONResponse({"styles": list(svc.pictures.stylizers), "style": b.style, "max_side": b.max_side,
                         "format": b.format, "quality": b.quality, "faces": b.face_enhance,
                         "max_body": svc.config.max_body, "token": bool(svc.config.token)})


async def metrics(request: Request) -> Response:
    svc = request.app.state.service
    try:
        _authorize(request, svc)
    except Refused as e:
        return _error(e.status, str(e), e.reason, None, e.headers)
    adm = svc.admission
    text = svc.metrics.text(adm.depth, adm.in_flight, peak_rss(svc.pictures.peaks), adm.ledger.free)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


# -- conversions -------------------------------------------------------------
async def convert(request: Request) -> Response:
    return await _upload(request, job=False)


async def submit_job(request: Request) -> Response:
    return await _upload(request, job=True)


async def _upload(request: Request, job: bool) -> Response:
    svc: Service = request.app.state.service
    rid = uuid.uuid4().hex[:16]
    client = request.client.host if request.client else None
    name = _clean_name(request.query_params.get("name"))
    extra = dict(request_id=rid, client=client)
    spool = None
    try:
        _authorize(request, svc)
        if svc.stopping:
            raise Refused(503, "the server is shutting down", "shutting down", {"Retry-After": "5"})
        try:
            options = request_options(request.query_params, svc.base, list(svc.pictures.stylizers))
        except OptionError as e:
            raise Refused(422, str(e), "bad option") from None
        body.announced(request, svc.config.max_body)
        if svc.admission.full():  # before reading: the body would have nowhere to wait
            raise _queue_full(svc)
        spool, given = await body.receive(request, svc.folder, svc.config.max_body, svc.config.body_timeout)
        name = _clean_name(given) if given and "name" not in request.query_params else name
        pending = await run_in_threadpool(svc.pictures.open, spool.path, name, options)
    except body.BodyError as e:
        return _refuse(svc, Refused(e.status, str(e), e.reason), name, extra, spool)
    except Refused as e:
        return _refuse(svc, e, name, extra, spool)
    except Exception as e:  # a bug: still one line, still a record
        return _refuse(svc, Refused(500, f"{name}: unexpected {type(e).__name__} ({first_line(e)})",
                                    "unexpected error"), name, extra, spool)
    if not pending.ready:  # refused from its header: a bomb, not an image
        rec = pending.record
        status = STATUS_OF_REASON.get(rec.reason, 422)
        return _refuse(svc, Refused(status, rec.error or f"{name}: {rec.reason}", rec.reason), name, extra, spool,
                       record=rec)
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    entry = svc.jobs.new() if job else None

    def finished(ticket: Ticket) -> None:  # a worker thread (or drain)
        spool.close()
        if entry is not None:
            _finish_job(svc, ticket, entry, extra)
        else:
            loop.call_soon_threadsafe(_resolve, done, ticket)

    ticket = Ticket(pending, finished)
    if entry is not None:
        entry.ticket = ticket
    if not svc.admission.submit(ticket):
        pending.close()
        if entry is not None:
            svc.jobs.failed(entry, 503, "the queue is full", None)
        e = Refused(503, "the server is shutting down", "shutting down", {"Retry-After": "5"}) \
            if svc.stopping else _queue_full(svc)
        return _refuse(svc, e, name, extra, spool, record=pending.record)
    svc.metrics.admit()
    if entry is not None:
        return JSONResponse(entry.view() | {"url": f"/v1/jobs/{entry.id}"}, status_code=202,
                            headers={"Location": f"/v1/jobs/{entry.id}", "X-Request-Id": rid})
    ticket = await done
    return _answer(svc, request, ticket, extra)


def _resolve(fut: asyncio.Future, ticket: Ticket) -> None:
    if not fut.done():
        fut.set_result(ticket)


def _outcome(ticket: Ticket) -> tuple[int, str | None, str | None]:
    """(HTTP status, error line, reason) of a ticket that has ended."""
    rec = ticket.pending.record
    if ticket.refused:
        return 503, ticket.refused, "shutting down"
    if rec.status == "ok" and ticket.pending.result is not None:
        return 200, None, None
    reason = rec.reason or "unexpected error"
    return STATUS_OF_REASON.get(reason, 422), rec.error or f"{rec.input}: {reason}", reason


def _answer(svc: Service, request: Request, ticket: Ticket, extra: dict) -> Response:
    status, message, reason = _outcome(ticket)
    pending = ticket.pending
    rec = _served(pending.record, extra, status, ticket.queue_wait)
    if status != 200:
        if ticket.refused:
            rec.status, rec.error, rec.reason = "error", message, reason
        _logged(svc, rec, status)
        headers = {"Retry-After": "5"} if status == 503 else None
        return _error(status, message, reason, extra["request_id"], headers)
    _logged(svc, rec, status)
    headers = {"X-Request-Id": extra["request_id"], "X-Anime-Cli-Record": json.dumps(rec.to_dict()),
               "Content-Disposition": f'inline; filename="{_result_name(rec.input, pending.suffix)}"'}
    if _wants_json(request):
        return JSONResponse({"record": rec.to_dict(), "media_type": pending.media_type,
                             "image": base64.b64encode(pending.result).decode("ascii")}, headers=headers)
    return Response(pending.result, media_type=pending.media_type, headers=headers)


def _finish_job(svc: Service, ticket: Ticket, entry, extra: dict) -> None:
    status, message, reason = _outcome(ticket)
    pending = ticket.pending
    rec = _served(pending.record, extra, status, ticket.queue_wait)
    if status == 200:
        rec.output = f"/v1/jobs/{entry.id}/result"
        svc.jobs.done(entry, pending.result, pending.media_type, pending.suffix, rec.to_dict())
    else:
        if ticket.refused:
            rec.status, rec.error, rec.reason = "error", message, reason
        svc.jobs.failed(entry, status, message, rec.to_dict())
    pending.result = None  # the job's file holds it now
    _logged(svc, rec, status)


# -- jobs ------------------------------------------------------------------------
def _known_job(request: Request):
    """The job the request names, or the error to answer: the token first, then the id."""
    svc = request.app.state.service
    try:
        _authorize(request, svc)
    except Refused as e:
        return _error(e.status, str(e), e.reason, None, e.headers)
    entry = svc.jobs.get(request.path_params["job_id"])
    if entry is None:
        return _error(404, "no such job (unknown, or its result has expired)", "no such job", None)
    return entry


async def job_status(request: Request) -> Response:
    entry = _known_job(request)
    if isinstance(entry, Response):
        return entry
    return JSONResponse(_job_view(entry))


async def job_result(request: Request) -> Response:
    entry = _known_job(request)
    if isinstance(entry, Response):
        return entry
    if entry.status == "error":
        return _error(entry.http_status, entry.error, (entry.record or {}).get("reason"), None)
    if entry.status != "done":
        view = _job_view(entry)
        return _error(409, f"job {entry.id} is {view['status']}: no result yet", "not done", None,
                      {"Retry-After": "1"})
    size = entry.size

    def chunks():
        for off in range(0, size, 1 << 20):
            yield entry.read(off, min(1 << 20, size - off))

    name = _result_name((entry.record or {}).get("input", "upload"), entry.suffix)
    return StreamingResponse(chunks(), media_type=entry.media_type,
                             headers={"Content-Length": str(size), "Content-Disposition": f'inline; filename="{name}"'})


def _job_view(entry) -> dict:
    view = entry.view()
    ticket = getattr(entry, "ticket", None)
    if view["status"] == "queued" and ticket is not None and ticket.started is not None:
        view["status"] = "running"
    return view


# -- helpers ---------------------------------------------------------------------
def _authorize(request: Request, svc: Service) -> None:
    token = svc.config.token
    if not token:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Refused(401, "a token is required: send 'Authorization: Bearer TOKEN'" if not given
                      else "the token is not right", "unauthorized", {"WWW-Authenticate": "Bearer"})


def _queue_full(svc: Service) -> Refused:
    return Refused(503, f"the queue is full ({svc.admission.max_queue} waiting); retry later", "queue full",
                   {"Retry-After": str(svc.admission.retry_after())})


def _refuse(svc: Service, e: Refused, name: str, extra: dict, spool=None, record: Record | None = None) -> Response:
    if spool is not None:
        spool.close()
    rec = record or Record(input=name)
    rec.status, rec.error, rec.reason = "error", str(e), e.reason
    svc.metrics.refuse(e.reason)
    _logged(svc, _served(rec, extra, e.status, None), e.status)
    return _error(e.status, str(e), e.reason, extra["request_id"], e.headers)


def _served(rec: Record, extra: dict, status: int, wait: float | None) -> ServedRecord:
    served = ServedRecord.of(rec, queue_wait=wait, http_status=status, **extra)
    if served.output == "-":
        served.output = None
    return served


def _logged(svc: Service, rec: ServedRecord, status: int) -> None:
    svc.metrics.answered(status, rec, rec.queue_wait)
    svc.log.write(rec)


def _error(status: int, message: str, reason: str | None, rid: str | None, headers: dict | None = None) -> Response:
    h = dict(headers or {})
    if rid:
        h["X-Request-Id"] = rid
    return JSONResponse({"error": first_line(Exception(message), None), "reason": reason, "status": status,
                         "request_id": rid}, status_code=status, headers=h)


def _wants_json(request: Request) -> bool:
    if request.query_params.get("json", "").lower() in ("1", "true", "yes"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "image/" not in accept


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\\"]")


def _clean_name(name: str | None) -> str:
    """A client's file name for the record: its last part, no control characters,
    at most 120 characters. It names nothing on the server."""
    if not name:
        return "upload"
    name = _UNSAFE.sub("_", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()[:120]
    return name or "upload"


def _result_name(name: str, suffix: str) -> str:
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:100] + "_anime" + suffix
