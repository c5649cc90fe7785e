"""A real HTTP server on loopback that behaves like the web a crawler meets."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

FIXTURES = Path(__file__).parent / "fixtures" / "site"
DOC_PAGES = sorted((FIXTURES / "docs").glob("*.html"))

BOT_WALL = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="refresh" content="390"></head><body><div class="main-wrapper" role="main">
<div class="main-content"><h1 class="zone-name-title h1">example.org</h1>
<h2 class="h2" id="challenge-running">Checking if the site connection is secure</h2>
<noscript><div class="h2"><span id="challenge-error-text">Enable JavaScript and cookies to
continue</span></div></noscript><p>Verify you are human by completing the action below.</p>
<p>example.org needs to review the security of your connection before proceeding.</p></div>
</div><script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1"></script></body>
</html>"""

ROBOTS = "User-agent: *\nDisallow: /private/\n"


def rss(base: str, links: list[str], *, full_content: dict[str, str] | None = None) -> str:
    items = []
    for number, link in enumerate(links, 1):
        content = (full_content or {}).get(link)
        encoded = f"<content:encoded><![CDATA[{content}]]></content:encoded>" if content else ""
        items.append(
            f"<item><title>Entry {number}</title><link>{base}{link}</link>"
            f"<guid>{base}{link}</guid><pubDate>Mon, 0{number} Jan 2024 10:00:00 GMT</pubDate>"
            f"<description>Short summary {number}.</description>{encoded}</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
        f"<channel><title>Ada's blog</title><link>{base}/</link>"
        f"<description>Writing</description>{''.join(items)}</channel></rss>"
    )


@dataclass
class Site:
    """What the server serves; tests change it between requests."""

    base: str = ""
    pages: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    etag_of: dict[str, str] = field(default_factory=dict)

    def page(self, path: str, body: str, *, status: int = 200, kind: str = "text/html") -> None:
        self.pages[path] = (status, kind, body)


class _Handler(BaseHTTPRequestHandler):
    site: ClassVar[Site]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        site = self.site
        path = self.path
        site.hits[path] += 1
        if path == "/slow.html":
            time.sleep(5)
        etag = site.etag_of.get(path)
        if path == "/huge.html":
            self._huge()
        elif path.startswith("/loop-"):
            target = "/loop-b" if path == "/loop-a" else "/loop-a"
            self._send(302, "text/html", b"", {"Location": target})
        elif path not in site.pages:
            self._send(404, "text/html", b"<h1>Not Found</h1>")
        elif etag is not None and self.headers.get("If-None-Match") == etag:
            self._send(304, site.pages[path][1], b"", {"ETag": etag})
        else:
            status, kind, body = site.pages[path]
            extra = {"ETag": etag} if etag else {}
            self._send(status, f"{kind}; charset=utf-8", body.encode(), extra)

    def _huge(self) -> None:
        # 9 MiB without a Content-Length: the limit must hold while reading.
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        chunk = b"<p>" + b"padding " * 8000 + b"</p>\n"
        sent = 0
        try:
            while sent < 9 * 1024 * 1024:
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(
        self, status: int, kind: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)  # a client that gave up (the slow page) is fine


@contextmanager
def serve() -> Iterator[Site]:
    site = Site()
    handler = type("Handler", (_Handler,), {"site": site})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    site.page("/robots.txt", ROBOTS, kind="text/plain")
    for page in DOC_PAGES:
        site.page(f"/docs/{page.name}", page.read_text())
    site.page("/private/secret.html", DOC_PAGES[0].read_text())
    site.page("/botwall.html", BOT_WALL, status=403)
    site.page("/slow.html", DOC_PAGES[0].read_text())
    site.page("/image.png", "\x89PNG not really", kind="image/png")
    site.page("/empty.html", "<html><head><title>Loading</title></head><body></body></html>")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


class _GitHandler(BaseHTTPRequestHandler):
    """git's smart HTTP protocol, by running ``git http-backend`` as the CGI it is."""

    root: ClassVar[Path]
    seen_hosts: ClassVar[list[str]]

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._backend()

    def do_POST(self) -> None:
        self._backend()

    def _backend(self) -> None:
        self.seen_hosts.append(self.headers.get("Host", ""))
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(length),
            "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": self.client_address[0],
        }
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Content-Encoding") == "gzip":
            env["HTTP_CONTENT_ENCODING"] = "gzip"
        out = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "status":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def serve_git(root: Path, host: str = "127.0.0.1") -> Iterator[tuple[int, list[str]]]:
    """Serve the bare repositories under ``root`` over smart HTTP on ``host``.

    Yields the port and the Host header of every request, as they arrive.
    """
    seen: list[str] = []
    handler = type("GitHandler", (_GitHandler,), {"root": root, "seen_hosts": seen})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()
