"""The page's HTTP server: 127.0.0.1 only, a per-start random token on every request, no
cross-origin use.

Why each guard (docs/ui.md, "Safety"):
- loopback only: nobody else on the network reaches the operator's credentials;
- the token (in the URL, or the X-Wfr-Token header), compared in constant time: another local
  user, or a page in the browser, can reach 127.0.0.1 but cannot guess it;
- the Host header must be 127.0.0.1:PORT or localhost:PORT, so a DNS-rebinding page (its own name
  resolving to 127.0.0.1) is refused;
- actions are POST only, and a POST whose Origin is not this server's, or whose Sec-Fetch-Site
  says another site made it, is refused; no CORS header is ever sent, so other origins cannot
  read an answer either.
"""
from __future__ import annotations

import hmac
import os
import secrets
import sys
import traceback
import webbrowser
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from html import escape
from importlib import resources
from urllib.parse import parse_qsl, urlsplit

from ..cloud import Cloud
from ..errors import ApiError, Unreachable, WfrError
from .. import backfills
from ..selection import Selection
from . import actions, bars, overview, page

TOKEN_HEADER = "X-Wfr-Token"
MAX_BODY = 64 * 1024          # the largest form the page posts is a few hundred bytes
STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}
# Only this server's own script and stylesheet; no inline code, no other origin, no framing.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
# The URL (with its token) is sent as Referer to this server only. Not no-referrer: with it,
# Chromium sends `Origin: null` on the page's own form posts, which the origin check refuses.
REFERRER_POLICY = "same-origin"
SAME_SITE_FETCH = frozenset({"same-origin", "none"})   # "none": typed, bookmarked or opened by wfr
DEFAULT_DAYS = 7              # the window the form proposes: the last week, up to now


@dataclass(frozen=True)
class App:
    cloud: Cloud
    token: str
    target_flags: list[str]   # the equivalent command's --local/--project/--region flags
    where: str                # the target, for the page's title


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: App, port: int):
        self.app = app
        super().__init__(("127.0.0.1", port), Handler)
        self.hosts = {f"127.0.0.1:{self.server_port}", f"localhost:{self.server_port}"}
        self.origins = {f"http://{host}" for host in self.hosts}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/?token={self.app.token}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "wfr-ui"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the stdlib's name)
        pass  # quiet: the terminal shows the URL, and errors only

    # --- guards ---------------------------------------------------------------------------
    def _refusal(self, post: bool) -> tuple[HTTPStatus, str] | None:
        if self.headers.get("Host", "") not in self.server.hosts:
            return HTTPStatus.FORBIDDEN, "this server answers to 127.0.0.1 or localhost only"
        fetch_site = self.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in SAME_SITE_FETCH:
            return HTTPStatus.FORBIDDEN, "cross-origin requests are refused"
        origin = self.headers.get("Origin")
        if post and origin is not None and origin not in self.server.origins:
            return HTTPStatus.FORBIDDEN, "cross-origin requests are refused"
        given = self._query.get("token") or self.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(given.encode(), self.server.app.token.encode()):
            return HTTPStatus.FORBIDDEN, "a valid token is required: open the URL wfr ui printed"
        return None

    def _route(self, post: bool) -> None:
        split = urlsplit(self.path)
        self._query = dict(parse_qsl(split.query, keep_blank_values=True))
        self._fields = self._query   # what was asked: an error page keeps it filled in
        refusal = self._refusal(post)
        if refusal:
            self._send(refusal[0], f"wfr ui: {refusal[1]}\n", "text/plain; charset=utf-8")
            return
        try:
            if post:
                form = self._form()
                if form is None:
                    return
                self._fields = form
                self._post(split.path, form)
            else:
                self._get(split.path)
        except WfrError as error:
            upstream = isinstance(error, Unreachable) or isinstance(error, ApiError) and error.code >= 500
            code = HTTPStatus.BAD_GATEWAY if upstream else HTTPStatus.BAD_REQUEST
            self._error(code, error.message)
        except Exception:  # noqa: BLE001 (the page must answer; the terminal gets the trace)
            traceback.print_exc(file=sys.stderr)
            self._page(HTTPStatus.INTERNAL_SERVER_ERROR, "error",
                       page.notice("wfr ui failed; the terminal running it shows why", "error"))

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self._route(post=False)

    def do_POST(self) -> None:  # noqa: N802
        self._route(post=True)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "wfr ui: GET and POST only\n", "text/plain; charset=utf-8",
                   {"Allow": "GET, POST"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

    def _form(self) -> dict[str, str] | None:
        length = self.headers.get("Content-Length", "0")
        if not length.isascii() or not length.isdigit() or int(length) > MAX_BODY:
            self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "wfr ui: form too large\n", "text/plain; charset=utf-8")
            return None
        if self.headers.get_content_type() != "application/x-www-form-urlencoded":
            self._send(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "wfr ui: actions are posted as forms\n",
                       "text/plain; charset=utf-8")
            return None
        body = self.rfile.read(int(length)).decode("utf-8", errors="replace")
        return dict(parse_qsl(body, keep_blank_values=True))

    # --- routes ---------------------------------------------------------------------------
    def _get(self, path: str) -> None:
        app = self.server.app
        if path.startswith("/static/") and path[len("/static/"):] in STATIC:
            name = path[len("/static/"):]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, STATIC[name])
            return
        now = datetime.now(timezone.utc)
        selection = Selection.from_form(self._query)
        if path == "/fragment" and selection.chosen:
            self._send(HTTPStatus.OK, self._live(selection, now), "text/html; charset=utf-8")
        elif path == "/" and selection.chosen:
            body = (self._pick(selection, now, open_=False) + page.notice(self._query.get("notice"))
                    + self._live(selection, now) + page.detail(selection, app.token))
            self._page(HTTPStatus.OK, selection.workflow or selection.job or "runs", body, "grid")
        elif path == "/":
            # Each part on its own: one that cannot be read says why, the rest still shows.
            rows = overview.contained(lambda: overview.jobs(app.cloud, now))
            found = overview.contained(lambda: overview.recent_backfills(app.cloud))
            body = (page.notice(self._query.get("notice")) + overview.html(rows, found, app.token, now)
                    + self._pick(selection, now, open_=False))
            self._page(HTTPStatus.OK, "overview", body, "overview")
        elif path == "/backfill":
            shown = backfills.show(app.cloud, self._query.get("id") or "")
            cancel = "" if not shown.active else page.action_form(
                "cancel", "Cancel…", {"backfill": shown.id}, app.token, True,
                '<label><input type="checkbox" name="runs" value="1"> and its running runs</label>')
            body = page.notice(self._query.get("notice")) + bars.page(
                shown, backfills.runs(app.cloud, shown), app.token, cancel)
            self._page(HTTPStatus.OK, f"backfill {shown.id[:8]}", body, "backfill")
        else:
            self._send(HTTPStatus.NOT_FOUND, "wfr ui: no such page\n", "text/plain; charset=utf-8")

    def _live(self, selection: Selection, now: datetime) -> str:
        app = self.server.app
        status = actions.load(app.cloud, selection)
        return page.live(status, actions.recent_backfills(app.cloud, status.workflow), selection, app.token, now)

    def _pick(self, selection: Selection, now: datetime, open_: bool) -> str:
        start = (now - timedelta(days=DEFAULT_DAYS - 1)).strftime("%Y-%m-%dT00:00:00Z")
        return page.selection_form(selection, self.server.app.token, start, now.strftime("%Y-%m-%dT%H:%M:00Z"), open_)

    def _post(self, path: str, form: dict[str, str]) -> None:
        app = self.server.app
        action = form.get("action", "")
        selection = Selection.from_form(form)
        back = page.url("/", app.token, selection.form()) if selection.chosen else \
            page.url("/backfill", app.token, {"id": form.get("backfill", "")})
        if path == "/preview":
            plan = actions.plan(app.cloud, action, form, app.target_flags)
            self._page(HTTPStatus.OK, plan.title, page.plan_page(plan, app.token, back), "plan")
        elif path == "/act":
            report = actions.perform(app.cloud, action, form)
            # 303: the browser shows the page with a GET, so reloading it does not act twice.
            target = back.split("?", 1)[0]
            query = {**(selection.form() if selection.chosen else {"id": form.get("backfill", "")}), "notice": report}
            self._send(HTTPStatus.SEE_OTHER, "", "text/plain", {"Location": page.url(target, app.token, query)})
        else:
            self._send(HTTPStatus.NOT_FOUND, "wfr ui: no such action\n", "text/plain; charset=utf-8")

    def _error(self, code: HTTPStatus, message: str) -> None:
        """The error above the selection form, filled in with what was asked (nothing retyped)."""
        now = datetime.now(timezone.utc)
        selection = Selection.from_form(self._fields)
        back = f'<p><a href="{escape(page.url("/", self.server.app.token))}">Overview</a></p>'
        self._page(code, "error", page.notice(message, "error") + self._pick(selection, now, open_=True) + back,
                   "error")

    # --- answers --------------------------------------------------------------------------
    def _page(self, code: HTTPStatus, title: str, body: str, kind: str = "") -> None:
        html = page.document(f"{title} · {self.server.app.where}", body, self.server.app.token)
        html = html.replace("<body>", f'<body data-page="{kind}">', 1)
        self._send(code, html, "text/html; charset=utf-8")

    def _send(self, code: HTTPStatus, body: str | bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(data)),
                            "Content-Security-Policy": CSP, "Referrer-Policy": REFERRER_POLICY,
                            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                            "Cache-Control": "no-store", **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _open(url: str) -> None:
    """Open the page in the desktop's browser. Without a display, Python's webbrowser would start
    a text browser (lynx, w3m) in this very terminal: then the URL printed above is enough."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("wfr ui: no display to open a browser on; open the URL above", file=sys.stderr, flush=True)
        return
    webbrowser.open(url)


def serve(cloud: Cloud, target_flags: list[str], where: str, port: int, open_browser: bool) -> int:
    """Serve until Ctrl-C; the page's URL is the first line on stdout."""
    app = App(cloud, secrets.token_urlsafe(32), target_flags, where)
    try:
        server = Server(app, port)
    except OSError as error:
        raise WfrError(f"cannot listen on 127.0.0.1:{port}: {error.strerror}") from None
    print(server.url, flush=True)
    print("wfr ui: serving on 127.0.0.1 only; Ctrl-C stops it", file=sys.stderr, flush=True)
    if open_browser:
        _open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
