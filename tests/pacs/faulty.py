"""A small HTTP server that misbehaves as a PACS can: answers 500, hangs, or sends a WADO-RS answer that
is not DICOM. Orthanc cannot be made to do these on demand; the client under test is the real one."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _handler(mode: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            if mode == "error":
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode == "hang":
                time.sleep(5)
            uid = self.path.split("/studies/")[1].split("/")[0] if "/studies/" in self.path else "1.2.3"
            if self.path.split("?")[0].endswith("/instances"):  # QIDO-RS: one instance
                body = json.dumps([{"0020000D": {"vr": "UI", "Value": [uid]}}]).encode()
                self._send(200, "application/dicom+json", body)
                return
            boundary = "kbtestboundary"
            body = (
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + b"this is not a DICOM instance at all"
                + f"\r\n--{boundary}--\r\n".encode()
            )
            self._send(200, f'multipart/related; type="application/dicom"; boundary={boundary}', body)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def faulty_pacs(mode: str) -> Iterator[str]:
    """The DICOMweb root of a server that answers every request per `mode`: error, hang or not-dicom."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(mode))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()
