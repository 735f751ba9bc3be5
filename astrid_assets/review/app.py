"""The scanning page's web application (FastAPI, Jinja templates, no JavaScript build step).

Pages: ``/signin``, ``/queue`` (candidates in teaching order, filters, disagreements), ``/candidate/<id>``
(triplet, measurements, score, labels and their agreement, consensus, expert review, light curve and
context), ``/overview`` (recent nights, injection completeness, champions, health). Every page but
``/signin``, ``/healthz`` and ``/static`` needs a signed-in person (:mod:`astrid_assets.review.auth`);
an unsigned request is sent to the sign-in page. Every form carries the session's CSRF token; every
value is escaped by Jinja's autoescaping; no secret is rendered (URLs are redacted).
"""

from __future__ import annotations

import logging
import math
import secrets
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from starlette.middleware.sessions import SessionMiddleware

from astrid_assets import settings
from astrid_assets.io.object_store import open_object_store
from astrid_assets.review import auth
from astrid_assets.review.overview import Overview
from astrid_assets.review.plots import completeness_svg, light_curve_svg
from astrid_assets.review.records import QueueFilters, ReviewRecords, as_records
from astrid_assets.review.stamps import STRETCHES, StampCache
from astrid_assets.science.detection.flags import describe_flags
from astrid_assets.science.products import STAMP_CHANNELS

__all__ = ["create_app"]

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "astrid_review"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class SignInRequired(Exception):
    """No signed-in person: the handler sends the browser to the sign-in page."""


def _local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/queue`` (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/queue"


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _shown(value, style: str = "%.2f") -> str:
    """A number as the page shows it; an en dash when there is none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return style % value


def _flag_names(flags) -> list[str]:
    return describe_flags(int(flags)) if flags is not None and flags == flags else []


def _filters(request: Request) -> QueueFilters:
    query = request.query_params
    flags = query.get("flags") or "any"
    return QueueFilters(start=query.get("start") or None, end=query.get("end") or None,
                        field=query.get("field") or None, p_min=_number(query.get("p_min")),
                        p_max=_number(query.get("p_max")), flags=flags if flags in ("unflagged", "flagged") else "any")


def _candidate_url(candidate_id: str, filters: QueueFilters) -> str:
    query = urlencode(filters.query())
    return f"/candidate/{quote(candidate_id, safe='')}" + (f"?{query}" if query else "")


def create_app(database_url: str | None = None, object_store_url: str | None = None) -> FastAPI:
    """The scanning page over AstrID's database and object store (default: the deployment's settings)."""
    database_url = database_url or settings.database_url()
    object_store_url = object_store_url or settings.object_store_url()
    records = ReviewRecords(database_url)
    store = open_object_store(object_store_url)
    stamps = StampCache(store)
    overview = Overview(store, database_url, object_store_url)
    user_header = settings.review_user_header()
    trusted = settings.review_trusted_proxies()
    secret = settings.review_secret()
    if secret is None:
        logger.warning("ASTRID_REVIEW_SECRET is not set: sessions are signed with a random key and end on restart")
        secret = secrets.token_urlsafe(32)
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True,
                            lstrip_blocks=True)
    templates.globals.update(flag_names=_flag_names, num=_shown, candidate_url=_candidate_url,
                             channels=STAMP_CHANNELS, quote=lambda value: quote(str(value), safe=""))

    app = FastAPI(title="AstrID review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SessionMiddleware, secret_key=secret, session_cookie=SESSION_COOKIE, same_site="lax",
                       https_only=settings.review_https_only(), max_age=12 * 3600)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if request.url.path.startswith(("/candidate", "/queue", "/overview", "/signin")):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(SignInRequired)
    async def to_sign_in(request: Request, _error: SignInRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?{urlencode({'next': target})}", status_code=303)

    def person_of(request: Request) -> dict:
        """The signed-in person (name, role); raises :class:`SignInRequired` when there is none."""
        if user_header:
            named = request.headers.get(user_header, "").strip()
            peer = request.client.host if request.client else None
            if named and auth.is_trusted_proxy(peer, trusted):
                found = records.person(named)
                if found is None:
                    records.add_person(named, None, "labeller")
                    found = records.person(named)
                request.session["person"] = found["name"]
                return found
        name = request.session.get("person")
        found = records.person(name) if name else None
        if found is None:
            raise SignInRequired()
        return found

    def check_csrf(request: Request, token: str | None) -> None:
        if not auth.valid_csrf(request.session, token):
            raise HTTPException(403, "form refused: missing or wrong CSRF token (reload the page and try again)")

    def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
        context.setdefault("person", None)
        html = templates.get_template(name).render(request=request, csrf_token=auth.csrf_token(request.session),
                                                   **context)
        return HTMLResponse(html, status_code=status_code)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        if request.url.path.startswith("/stamp/"):
            return PlainTextResponse(str(error.detail), status_code=error.status_code)
        return render(request, "error.html", status_code=error.status_code, message=str(error.detail))

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse("/queue", status_code=303)

    @app.get("/signin", response_class=HTMLResponse)
    def sign_in_page(request: Request, next: str | None = None):
        return render(request, "signin.html", next=_local_path(next), error=None)

    @app.post("/signin")
    def sign_in(request: Request, name: str = Form(""), password: str = Form(""), next: str = Form("/queue"),
                csrf_token: str | None = Form(None)):
        check_csrf(request, csrf_token)
        found = records.person(name.strip())
        if found is None or not auth.verify_password(password, found["password_hash"]):
            return render(request, "signin.html", status_code=401, next=_local_path(next),
                          error="Unknown name or wrong password.")
        request.session.clear()
        request.session["person"] = found["name"]
        auth.csrf_token(request.session)
        return RedirectResponse(_local_path(next), status_code=303)

    @app.post("/signout")
    def sign_out(request: Request, csrf_token: str | None = Form(None)):
        check_csrf(request, csrf_token)
        request.session.clear()
        return RedirectResponse("/signin", status_code=303)

    @app.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request):
        person = person_of(request)
        filters = _filters(request)
        queue = records.queue(person["name"], filters)
        return render(request, "queue.html", person=person, filters=filters, window=records.window(filters),
                      rows=as_records(queue), disagreements=records.disagreements(filters),
                      nights=records.nights_with_candidates()[:30])

    def neighbours(person: str, candidate_id: str, filters: QueueFilters) -> tuple[str | None, str | None]:
        """The candidates before and after ``candidate_id`` in the person's queue."""
        order = records.queue(person, filters, limit=None, keep=candidate_id).candidate_id.tolist()
        if candidate_id not in order:
            return None, order[0] if order else None
        at = order.index(candidate_id)
        return (order[at - 1] if at > 0 else None), (order[at + 1] if at + 1 < len(order) else None)

    @app.get("/candidate/{candidate_id}", response_class=HTMLResponse)
    def candidate_page(request: Request, candidate_id: str):
        person = person_of(request)
        candidate = records.candidate(candidate_id)
        if candidate is None:
            raise HTTPException(404, f"no candidate {candidate_id}")
        filters = _filters(request)
        previous, following = neighbours(person["name"], candidate_id, filters)
        labels, reviews = records.labels_of(candidate_id), records.reviews_of(candidate_id)
        votes = {}
        for label in labels:
            votes[label["labeller"]] = label["label"]
        decided = {v for v in votes.values() if v in ("real", "bogus")}
        found = records.object_of(candidate_id)
        dagster = settings.redact_url(settings.dagster_url()).rstrip("/")
        dagster_link = f"{dagster}/assets/candidate_detections?" + urlencode(
            {"view": "partitions", "partition": candidate["night"]})
        return render(
            request, "candidate.html", person=person, candidate=candidate, filters=filters,
            previous=previous, following=following, labels=labels, votes=votes, disagree=len(decided) > 1,
            my_label=votes.get(person["name"]), consensus=records.consensus_of(labels, reviews),
            reviews=reviews, stretches=STRETCHES,
            object=found, light_curve=light_curve_svg(found["light_curve"]) if found else None,
            dagster_link=dagster_link, candidate_flags=_flag_names(candidate.get("flags")))

    @app.post("/candidate/{candidate_id}/label")
    def label_candidate(request: Request, candidate_id: str, label: str = Form(...),
                        model_version: str = Form(""), real_probability: str = Form(""), note: str = Form(""),
                        csrf_token: str | None = Form(None)):
        check_csrf(request, csrf_token)
        person = person_of(request)
        if label not in ("real", "bogus", "unsure"):
            raise HTTPException(400, f"unknown label {label!r}")
        probability = _number(real_probability)
        if probability is not None and not 0 <= probability <= 1:
            raise HTTPException(400, "a real probability is between 0 and 1")
        filters = _filters(request)
        _, following = neighbours(person["name"], candidate_id, filters)
        try:
            records.record_label(candidate_id, person["name"], label, model_version.strip()[:64] or None,
                                 probability, note.strip()[:2000] or None)
        except KeyError:
            raise HTTPException(404, f"no candidate {candidate_id}") from None
        if following:
            return RedirectResponse(_candidate_url(following, filters), status_code=303)
        query = urlencode(filters.query())
        return RedirectResponse("/queue" + (f"?{query}" if query else ""), status_code=303)

    @app.post("/candidate/{candidate_id}/review")
    def review_candidate(request: Request, candidate_id: str, confirmed: str = Form(...), importance: int = Form(3),
                         note: str = Form(""), csrf_token: str | None = Form(None)):
        check_csrf(request, csrf_token)
        person = person_of(request)
        if person["role"] != "expert":
            raise HTTPException(403, "only an expert can review a candidate")
        if confirmed not in ("yes", "no") or not 1 <= importance <= 5:
            raise HTTPException(400, "a review is confirmed yes/no with an importance of 1 to 5")
        try:
            records.record_review(candidate_id, person["name"], confirmed == "yes", importance,
                                  note.strip()[:2000] or None)
        except KeyError:
            raise HTTPException(404, f"no candidate {candidate_id}") from None
        return RedirectResponse(_candidate_url(candidate_id, _filters(request)), status_code=303)

    @app.get("/stamp/{candidate_id}/{channel}.png")
    def stamp(request: Request, candidate_id: str, channel: str, stretch: str = "zscale"):
        person_of(request)
        if channel not in STAMP_CHANNELS or stretch not in STRETCHES:
            raise HTTPException(404, "no such stamp")
        candidate = records.candidate(candidate_id)
        if candidate is None or not candidate.get("stamp_path"):
            raise HTTPException(404, "no such stamp")
        try:
            png = stamps.png(candidate["stamp_path"], candidate["stamp_index"], channel, stretch)
        except (KeyError, IndexError):
            raise HTTPException(404, "the stamp is not in the object store") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/overview", response_class=HTMLResponse)
    def overview_page(request: Request):
        person = person_of(request)
        nights = records.night_counts()
        injections = [summary for night in (n["night"] for n in nights)
                      if (summary := overview.completeness(night)) is not None][:3]
        for summary in injections:
            summary["svg"] = completeness_svg(summary["bin_centres"], summary["fraction"])
        return render(request, "overview.html", person=person, nights=nights, injections=injections,
                      champions=records.champions(), health=overview.health(),
                      dagster=settings.redact_url(settings.dagster_url()))

    app.state.records = records
    app.state.stamps = stamps
    return app
