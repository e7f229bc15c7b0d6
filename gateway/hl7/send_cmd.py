"""`smsgw hl7 send FILE...`: a console MLLP client. Each file may hold one message or
several (split where a line starts with MSH); LF or CRLF line ends are sent as CR.
Prints a row per message under a header: FILE, CONTROL-ID (MSH-10), ACK (the ACK's
MSA-1) and ERROR (its ERR text, if any). Exit status 0 only if every message was
accepted (AA or CA).

For a demo, `--phone`, `--language`, `--shift-days` and `--control-id-suffix` edit each
message before it leaves (see gateway/hl7/demo_edit.py).

`smsgw hl7 listen [--port 2576]`: a console MLLP server standing for the EHR that
replies are written back to (the embedded default's `demo-ehr-out`): prints each
message it gets, one segment a line, and answers AA."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import ssl
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.hl7 import demo_edit
from gateway.hl7.client import MllpClient, MllpError
from gateway.hl7.settings import DEMO_PORT, DEMO_WRITEBACK_PORT
from gateway.table import Table


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("hl7", help="HL7 v2 over MLLP tools")
    actions = parser.add_subparsers(dest="action", required=True)
    send = actions.add_parser("send", help="send HL7 files to an MLLP listener, print each ACK")
    send.add_argument("files", nargs="+", metavar="FILE", help="HL7 files, each of 1+ messages")
    send.add_argument("--host", default="127.0.0.1", help="the MLLP listener's address")
    send.add_argument(
        "--port", type=int, default=DEMO_PORT, help=f"its port (default {DEMO_PORT}, the demo feed)"
    )
    send.add_argument("--tls", action="store_true", help="speak TLS")
    send.add_argument("--ca-file", help="trust this CA for --tls (default: the system's)")
    send.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per ACK")
    send.add_argument("--phone", metavar="+E164", help="make PID-13 this mobile number")
    send.add_argument("--language", metavar="CODE", help="make PID-15 this language (es, spa)")
    send.add_argument(
        "--shift-days",
        type=int,
        metavar="N",
        help="move every timestamp by whole days so the (first) start is N days from today",
    )
    send.add_argument(
        "--control-id-suffix",
        metavar="TEXT",
        help="append TEXT to each MSH-10 ('auto': a fresh suffix per run), so a re-send is new",
    )
    send.set_defaults(func=run)
    listen = actions.add_parser("listen", help="print the HL7 messages sent here, answer AA")
    listen.add_argument("--host", default="127.0.0.1", help="address to listen on")
    listen.add_argument(
        "--port",
        type=int,
        default=DEMO_WRITEBACK_PORT,
        help=f"port (default {DEMO_WRITEBACK_PORT}, the demo's write-back)",
    )
    listen.set_defaults(func=run_listener)


def edit(messages: list[str], args: argparse.Namespace, now: datetime) -> list[str]:
    """The messages with the demo edits the options ask for (ValueError: say why not).
    `--shift-days` counts from `now`'s date; MSH-7 then becomes `now` (demo_edit.stamp_sent)."""
    today = now.astimezone().date()
    suffix = args.control_id_suffix
    if suffix == "auto":
        suffix = "-" + secrets.token_hex(3)
    days = None
    if args.shift_days is not None:
        # one offset for all, from the first start, so an S15 and its S12 stay in step
        starts = [d for d in map(demo_edit.start_day, messages) if d is not None]
        if not starts:
            raise ValueError("--shift-days: no message has a start (TQ1-7, SCH-11, AIS-4 ...)")
        days = (today - starts[0]).days + args.shift_days
    out = []
    for m in messages:
        if days is not None:
            m = demo_edit.stamp_sent(demo_edit.shift_by(m, days), now)
        if args.phone:
            m = demo_edit.set_phone(m, args.phone)
        if args.language:
            m = demo_edit.set_language(m, args.language)
        if suffix:
            m = demo_edit.suffix_control_id(m, suffix)
        out.append(m)
    return out


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
    msh = ack.split("\r", 1)[0]
    cs, sub = (msh[4], msh[7]) if len(msh) > 7 else ("^", "&")
    for seg in ack.split("\r"):
        if seg.startswith("ERR"):
            f = seg.split(seg[3])
            if len(f) > 8 and f[8]:
                return f[8]
            if len(f) > 3 and f[3]:
                return f[3]
            if len(f) > 1:  # before v2.5: ERR-1 is location^...^code&text&table
                code = (f[1].split(cs) + [""] * 4)[3].split(sub)
                return code[1] if len(code) > 1 else ""
    return ""


def run(args: argparse.Namespace) -> int:
    files: list[tuple[str, list[str] | None]] = []
    for name in args.files:
        try:
            files.append((name, split_messages(Path(name).read_bytes())))
        except OSError as e:
            print(f"{name}: cannot read: {e.strerror or e}", file=sys.stderr)
            files.append((name, None))
    if any(
        v is not None for v in (args.phone, args.language, args.shift_days, args.control_id_suffix)
    ):
        readable = [m for _, ms in files for m in ms or []]
        try:
            edited = iter(edit(readable, args, demo_edit.utc_now()))
        except ValueError as e:
            print(f"cannot edit the messages: {e}", file=sys.stderr)
            return 2
        files = [(n, None if ms is None else [next(edited) for _ in ms]) for n, ms in files]
    return asyncio.run(_send(args, files))


async def _send(args: argparse.Namespace, files: list[tuple[str, list[str] | None]]) -> int:
    context = None
    if args.tls:
        context = ssl.create_default_context(cafile=args.ca_file)
    client = MllpClient(args.host, args.port, context=context, timeout=args.timeout)
    ok = True
    acks = Table(("FILE", "CONTROL-ID", "ACK", "ERROR"), (max(len(n) for n, _ in files), 20))
    try:
        for name, messages in files:
            if messages is None:
                ok = False
                continue
            for message in messages:
                try:
                    ack = await client.send(message)
                except MllpError as e:
                    acks.row(name, _control_id(message), "-", f"no ACK ({e})")
                    ok = False
                    continue
                err = _err_text(ack.text)
                acks.row(name, _control_id(message), ack.code or "?", err or "")
                ok = ok and ack.code in ("AA", "CA")
    finally:
        await client.aclose()
    return 0 if ok else 1


def run_listener(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_listen(args.host, args.port))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        print(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


async def _listen(host: str, port: int) -> None:
    import hl7.mllp  # python-hl7's MLLP server: for this command only, not smsgw run's start

    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                print(str(message).replace("\r", "\n").rstrip("\n") + "\n", flush=True)
                writer.writemessage(message.create_ack("AA"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(handle, host, port, encoding="utf-8")
    bound = server.sockets[0].getsockname()[1]
    print(f"listening for HL7 over MLLP on {host}:{bound} (Ctrl-C stops)", flush=True)
    async with server:
        await server.serve_forever()
