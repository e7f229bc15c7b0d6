"""`smsgw hl7 send FILE...`: a console MLLP client. Each file may hold one message or
several (split where a line starts with MSH); LF or CRLF line ends are sent as CR.
Prints one line per message: file, MSH-10, and the ACK's MSA-1 (with the ERR text
when there is one). Exit status 0 only if every message was accepted (AA or CA)."""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from pathlib import Path
from typing import Any

from gateway.hl7.client import MllpClient, MllpError
from gateway.hl7.settings import DEMO_PORT


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("hl7", help="HL7 v2 over MLLP tools")
    actions = parser.add_subparsers(dest="action", required=True)
    send = actions.add_parser("send", help="send HL7 files to an MLLP listener, print each ACK")
    send.add_argument("files", nargs="+", metavar="FILE")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=DEMO_PORT)
    send.add_argument("--tls", action="store_true", help="speak TLS")
    send.add_argument("--ca-file", help="trust this CA for --tls (default: the system's)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per ACK")
    parser.set_defaults(func=run)


def split_messages(raw: bytes) -> list[str]:
    """The messages in a file, segments separated by CR."""
    text = raw.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln]
    messages: list[list[str]] = []
    for line in lines:
        if line.startswith("MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return ["\r".join(m) + "\r" for m in messages]


def _control_id(message: str) -> str:
    msh = message.split("\r", 1)[0]
    fields = msh.split(msh[3]) if len(msh) > 3 else []
    return fields[9] if len(fields) > 9 else ""


def _err_text(ack: str) -> str:
    for seg in ack.split("\r"):
        if seg.startswith("ERR"):
            f = seg.split(seg[3])
            return f[8] if len(f) > 8 and f[8] else (f[3] if len(f) > 3 else "")
    return ""


def run(args: argparse.Namespace) -> int:
    files: list[tuple[str, bytes | None]] = []
    for name in args.files:
        try:
            files.append((name, Path(name).read_bytes()))
        except OSError as e:
            print(f"{name}: cannot read: {e.strerror or e}", file=sys.stderr)
            files.append((name, None))
    return asyncio.run(_send(args, files))


async def _send(args: argparse.Namespace, files: list[tuple[str, bytes | None]]) -> int:
    context = None
    if args.tls:
        context = ssl.create_default_context(cafile=args.ca_file)
    client = MllpClient(args.host, args.port, context=context, timeout=args.timeout)
    ok = True
    try:
        for name, raw in files:
            if raw is None:
                ok = False
                continue
            for message in split_messages(raw):
                try:
                    ack = await client.send(message)
                except MllpError as e:
                    print(f"{name} {_control_id(message)}: no ACK ({e})")
                    ok = False
                    continue
                err = _err_text(ack.text)
                print(f"{name} {_control_id(message)}: {ack.code or '?'}{' ' + err if err else ''}")
                ok = ok and ack.code in ("AA", "CA")
    finally:
        await client.aclose()
    return 0 if ok else 1
