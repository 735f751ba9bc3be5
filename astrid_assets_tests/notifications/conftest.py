"""Real servers on loopback for the notification tests: an SMTP server (aiosmtpd) that requires a login, and an
HTTP server that records webhook posts. Tests using them carry the ``integration`` marker."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SMTP_USER, SMTP_PASSWORD = "apikey", "SG.sm7p-Pa55word-never-shown"
WEBHOOK_TOKEN = "hook-T0ken-never-shown"


@dataclass
class SmtpServer:
    host: str
    port: int
    messages: list = field(default_factory=list)  #: email.message.EmailMessage received
    raw: list = field(default_factory=list)  #: their bytes as received
    logins: list = field(default_factory=list)  #: (login, accepted)

    @property
    def url(self) -> str:
        return f"smtp://{SMTP_USER}:{SMTP_PASSWORD}@{self.host}:{self.port}"


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from astrid_assets.testing.servers import free_port

    server = SmtpServer("127.0.0.1", free_port())

    class Handler:
        async def handle_DATA(self, smtp, session, envelope):
            server.raw.append(envelope.content)
            server.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    def authenticate(smtp, session, envelope, mechanism, auth_data):
        accepted = auth_data.login.decode() == SMTP_USER and auth_data.password.decode() == SMTP_PASSWORD
        server.logins.append((auth_data.login.decode(), accepted))
        return AuthResult(success=accepted)

    controller = Controller(Handler(), hostname=server.host, port=server.port, authenticator=authenticate,
                            auth_required=True, auth_require_tls=False)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


@dataclass
class WebhookServer:
    url: str
    posts: list = field(default_factory=list)  #: (headers, JSON body)
    raw: list = field(default_factory=list)
    fail: bool = False  #: answer 500 while set


@pytest.fixture
def webhook_server():
    from astrid_assets.testing.servers import free_port

    port = free_port()
    hook = WebhookServer(f"http://127.0.0.1:{port}/hooks/{WEBHOOK_TOKEN}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if hook.fail:
                self.send_response(500)
                self.end_headers()
                return
            hook.raw.append(body)
            hook.posts.append((dict(self.headers), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        httpd.shutdown()
        httpd.server_close()
