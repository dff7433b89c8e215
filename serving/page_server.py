"""`python -m serving.page_server EXPORT_DIR [--port 8001]`: the try-it page with the export's files, for a
runtime that runs in the page (onnxruntime-web), from the standard library alone.

No model runs on this server: it hands out files. The URLs (what an in-page back end is written against):

- `/` is `static/index.html`; `/static/NAME` the page's files (`serving/static/`: `page.js`, `page.css`,
  `sentencepiece.js`, ...), the same paths `python -m serving.server` serves them at.
- `/export/PATH` the export files an in-page runtime needs, and only those: `config.json`,
  `manifest.json`, the tokenizer (`config.json`'s `tokenizer`, `tokenizer.model`) and every graph file
  `config.json` lists (`graphs`, and the int8 copies of `--quantize`), e.g. `/export/onnx/generate.onnx`.
  They are checked against `manifest.json` at start (`--no-verify` skips it), as the Python runtime does.
- `/ort/NAME` the files of onnxruntime-web's `dist/` (`js/node_modules/onnxruntime-web/dist/`, installed
  by `make js`; `--ort-dir` names another), e.g. `/ort/ort.wasm.min.mjs` (the WASM-only ES module) and the
  `ort-wasm-simd-threaded.{mjs,wasm}` it loads from the same folder.

Anything else is 404 (no directory listings, no path outside those files). Every response is
cross-origin isolated (`Cross-Origin-Opener-Policy: same-origin`, `Cross-Origin-Embedder-Policy:
require-corp`): the page loads nothing from other origins, and isolation is what lets onnxruntime-web use
WASM threads (`SharedArrayBuffer`) when the page asks for them with `ort.env.wasm.numThreads`.
"""

from __future__ import annotations

import argparse
import email.utils
import sys
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from serving.errors import ServingError
from serving.export_config import CONFIG, ExportConfig
from serving.manifest import MANIFEST, verify_manifest

__all__ = ["ORT_WEB_DIST", "PAGE_DIR", "PageFiles", "build_parser", "main", "make_server"]

PAGE_DIR = Path(__file__).resolve().parent / "static"
# Where `make js` installs onnxruntime-web (js/package.json pins it), beside this package in a checkout.
ORT_WEB_DIST = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "onnxruntime-web" / "dist"
ORT_MODULE = "ort.wasm.min.mjs"  # the WASM-only ES module build; it must be there for the page to run

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".model": "application/octet-stream",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
# Same-origin isolation: SharedArrayBuffer (WASM threads) in the page; everything it loads is from here.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}


def _export_files(export_dir: Path, config: ExportConfig) -> tuple[str, ...]:
    """The export's files a runtime in the page may fetch (relative posix paths), manifest first."""
    graphs = [config.graph(name).file for name in config.graph_names]
    files = [MANIFEST, CONFIG, config.tokenizer, *graphs, *config.int8_graph_files().values()]
    return tuple(dict.fromkeys(files))


@dataclass(frozen=True)
class PageFiles:
    """URL path -> file on disk, for the three roots the server serves; built once at start."""

    page_dir: Path
    export_dir: Path
    export_files: tuple[str, ...]
    ort_dir: Path

    @classmethod
    def load(cls, export_dir: str | Path, ort_dir: str | Path = ORT_WEB_DIST, verify: bool = True) -> PageFiles:
        """Checks the export (its config, and with `verify` its files against the manifest) and that
        onnxruntime-web is installed. Raises `ServingError` with one line."""
        export_dir = Path(export_dir)
        config = ExportConfig.read(export_dir)
        files = _export_files(export_dir, config)
        if verify:
            verify_manifest(export_dir, required=files[1:], only_required=True, require_validated=True)
        ort_dir = Path(ort_dir)
        if not (ort_dir / ORT_MODULE).is_file():
            raise ServingError(f"onnxruntime-web is not installed ({ort_dir / ORT_MODULE} is missing); run make js")
        return cls(PAGE_DIR, export_dir, files, ort_dir)

    def resolve(self, url_path: str) -> Path | None:
        """The file for a decoded request path (no query), or None: only the files above, no `.` or `..`
        segments, no empty ones (`/static/` is not a listing)."""
        if url_path in ("/", "/index.html"):
            return self.page_dir / "index.html"
        parts = url_path.split("/")
        if "" in parts[1:] or any(part in (".", "..") or "\\" in part or "\0" in part for part in parts):
            return None
        root, _, rest = url_path[1:].partition("/")
        if root == "export":
            return self.export_dir / rest if rest in self.export_files else None
        if root == "static" and "/" not in rest:
            path = self.page_dir / rest
        elif root == "ort" and "/" not in rest:
            path = self.ort_dir / rest
        else:
            return None
        return path if rest and path.is_file() else None


class PageHandler(BaseHTTPRequestHandler):
    """GET and HEAD of `PageFiles`; anything else is 405."""

    files: PageFiles  # set on the subclass `make_server` builds
    access_log = False
    server_version = "keras-nlp-week4-page"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's names)
        self._serve(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "this server only hands out files (GET, HEAD)",
                    {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    def _serve(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        file = self.files.resolve(path) if path.startswith("/") else None
        if file is None:
            self._error(HTTPStatus.NOT_FOUND, f"{path} is not a file this server serves")
            return
        try:
            stat = file.stat()
            modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
            since = self.headers.get("If-Modified-Since")
            if since and _not_modified(since, stat.st_mtime):
                self._head(HTTPStatus.NOT_MODIFIED, {"Last-Modified": modified})
                return
            data = file.read_bytes() if body else b""
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, f"{path} is not readable")
            return
        content_type = MIME_TYPES.get(file.suffix.lower(), "application/octet-stream")
        self._head(HTTPStatus.OK, {"Content-Type": content_type, "Content-Length": str(stat.st_size),
                                   "Last-Modified": modified})
        if body:
            self.wfile.write(data)

    def _head(self, status: HTTPStatus, headers: dict[str, str]) -> None:
        self.send_response(status)
        # Files change when the export or the page is rebuilt: revalidate (If-Modified-Since) every time.
        for name, value in {**headers, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
                            **ISOLATION_HEADERS}.items():
            self.send_header(name, value)
        if status == HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def _error(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        data = f"{status.value} {status.phrase}: {message}\n".encode()
        self._head(status, {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(data)),
                            **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        if self.access_log:
            super().log_message(format, *args)


def _not_modified(since: str, mtime: float) -> bool:
    try:
        parsed = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return parsed is not None and int(mtime) <= parsed.timestamp()


def make_server(files: PageFiles, host: str = "127.0.0.1", port: int = 8001,
                access_log: bool = False) -> ThreadingHTTPServer:
    """A threaded HTTP server for `files` (port 0: a free port, then `server.server_address[1]`);
    the caller runs `serve_forever()` and `server_close()`."""
    handler = type("BoundPageHandler", (PageHandler,), {"files": files, "access_log": access_log})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving.page_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export_dir", help="export directory (RUN/export, written by `python -m export`)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default 8001; 0: any free)")
    parser.add_argument("--ort-dir", default=str(ORT_WEB_DIST),
                        help="onnxruntime-web's dist/ folder (default: js/node_modules/onnxruntime-web/dist)")
    parser.add_argument("--no-verify", dest="verify", action="store_false",
                        help="skip the sha256 check of the served files against manifest.json")
    parser.add_argument("--access-log", action="store_true", help="log every request on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = PageFiles.load(args.export_dir, args.ort_dir, verify=args.verify)
        server = make_server(files, args.host, args.port, access_log=args.access_log)
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the port is taken, the address is not local, ...
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"serving the page for {files.export_dir} on http://{host}:{port}/ (files only: the model runs in "
          "the page)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
