"""Seeds a fresh chatd for .ci/schemathesis.sh: three users, a direct room
and a group, messages from both sides (text with a few scripts, a file, a
reply, a reaction), and a scheduled message, so that the fuzzed ids hit real
objects. Prints the first user's token on stdout.

Standard library only: a WebSocket client just big enough for send_message.
"""

import base64
import datetime
import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

BASE = sys.argv[1].rstrip("/")
HOST, PORT = urllib.parse.urlsplit(BASE).hostname, urllib.parse.urlsplit(BASE).port


def call(method, path, token=None, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if isinstance(body, (dict, list)):
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read() or b"null")
    except urllib.error.HTTPError as e:
        sys.exit(f"seed: {method} {path} answered {e.code}: {e.read()[:300]!r}")


class Ws:
    """A client WebSocket: masked text frames out, unmasked frames in."""

    def __init__(self, token):
        self.sock = socket.create_connection((HOST, PORT), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /api/chat/ws?token={token} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                sys.exit("seed: the WebSocket handshake was cut")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(f"seed: WebSocket refused: {head[:200]!r}")

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                sys.exit("seed: the WebSocket closed")
            out += chunk
        return out

    def send(self, value):
        payload = json.dumps(value).encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (
            bytes([0x80 | n]) if n < 126
            else bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536
            else bytes([0x80 | 127]) + n.to_bytes(8, "big")
        )
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def receive(self):
        first, second = self._exact(2)
        n = second & 0x7F
        if n == 126:
            n = int.from_bytes(self._exact(2), "big")
        elif n == 127:
            n = int.from_bytes(self._exact(8), "big")
        payload = self._exact(n)
        return json.loads(payload) if first & 0x0F == 1 else None

    def until(self, kind):
        while True:
            frame = self.receive()
            if frame and frame.get("type") == "error":
                sys.exit(f"seed: the server answered error: {frame}")
            if frame and frame.get("type") == kind:
                return frame["data"]

    def message(self, **data):
        self.send({"type": "send_message", "data": data})
        return self.until("new_message")


def register(name):
    body = {"name": name.title(), "email": f"{name}@example.com", "password": "correct horse battery"}
    answer = call("POST", "/api/auth/register", body=body)
    return answer["user"]["id"], answer["access_token"]


def main():
    ann, ann_token = register("ann")
    bob, bob_token = register("bob")
    cat, _ = register("cat")
    direct = call("POST", "/api/chat/rooms", ann_token, {"receiver_id": bob})["id"]
    group = call("POST", "/api/chat/rooms", ann_token, {"name": "Team", "member_ids": [bob, cat]})["id"]

    ann_ws, bob_ws = Ws(ann_token), Ws(bob_token)
    for ws in (ann_ws, bob_ws):
        ws.until("synced")
    first = ann_ws.message(room_id=direct, message_type="text", content="Hello Bob, straße İstanbul", local_temp_id="s1")
    bob_ws.message(room_id=direct, message_type="text", content="Привет, 你好 👋 <b>bold</b>", reply_to_id=first["id"])
    ann_ws.message(room_id=group, message_type="text", content="Group hello", local_temp_id="s2")
    bob_ws.message(room_id=group, message_type="text", content="hello from bob")
    text = b"a small text file\n"
    upload = call(
        "POST", "/api/chat/uploads", ann_token, text,
        {"Content-Type": "text/plain", "X-File-Name": "notes.txt"},
    )
    ann_ws.message(room_id=direct, message_type="file", content="", files_data=[{"upload_id": upload["upload_id"]}])
    call("POST", f"/api/chat/messages/{first['id']}/reactions", bob_token, {"emoji": "👍"})
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)
    ann_ws.send({"type": "send_message", "data": {
        "room_id": group, "message_type": "text", "content": "later", "send_at": later.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }})
    ann_ws.until("message_scheduled")
    print(ann_token)


if __name__ == "__main__":
    main()
