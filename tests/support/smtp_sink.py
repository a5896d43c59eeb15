#!/usr/bin/env python3
"""An SMTP server for tests (aiosmtpd): every message it accepts becomes a file, so a test can read exactly
what the gateway put on the wire.

    smtp_sink.py --port PORT --dir DIR [--data-delay SECONDS] [--tls-cert CERT --tls-key KEY]

- Listens on 127.0.0.1:PORT and prints "listening on 127.0.0.1:PORT" once it accepts connections.
- Message n (numbered from 1, continuing after the files already in DIR, so a restart on the same DIR appends)
  is written as DIR/n.eml (the raw message, CRLF line ends as received) with DIR/n.json beside it
  ({"mail_from": ..., "rcpt_tos": [...]}). n.json is written first and n.eml appears by rename, so a reader
  that sees n.eml sees a complete message.
- A recipient whose local part starts with "reject" gets 550, with "defer" 451 (permanent / transient refusals).
- --data-delay (or SMTP_SINK_DATA_DELAY) waits that many seconds before answering the end of DATA, so a test
  can stop the sender while a message is in flight. The message is written before the wait, as a real MTA
  queues a message before answering 250.
- --tls-cert/--tls-key offer STARTTLS with that certificate (optional for the client).
- Stops on SIGTERM/SIGINT, or when its standard input closes (its parent went away).
- Session errors a test provokes on purpose (a client refusing the certificate) are not logged unless
  SMTP_SINK_VERBOSE=1.
"""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import ssl
import sys
import threading

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, directory, data_delay):
        self.directory = directory
        self.data_delay = data_delay
        numbers = [int(m.group(1)) for m in (re.fullmatch(r"(\d+)\.eml", f) for f in os.listdir(directory)) if m]
        self.next = max(numbers, default=0) + 1

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local.startswith("reject"):
            return "550 5.1.1 Mailbox unavailable"
        if local.startswith("defer"):
            return "451 4.3.0 Mailbox temporarily unavailable, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # Stored first, then the reply waits: a real MTA commits a message to its queue before it answers 250,
        # so a client that dies while waiting for the answer has still delivered it.
        n = self.next
        self.next += 1
        base = os.path.join(self.directory, str(n))
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos}, f)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content)
        os.replace(base + ".eml.tmp", base + ".eml")
        if self.data_delay > 0:
            await asyncio.sleep(self.data_delay)
        return "250 2.0.0 Message accepted for delivery"


async def serve(args):
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    handler = Sink(args.dir, args.data_delay)
    loop = asyncio.get_running_loop()

    def factory():
        return SMTP(handler, hostname="smtp-sink.test", decode_data=False, tls_context=tls_context,
                    require_starttls=False, enable_SMTPUTF8=True)

    server = await loop.create_server(factory, host="127.0.0.1", port=args.port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        loop.call_soon_threadsafe(stop.set)

    if not args.ignore_stdin:
        threading.Thread(target=watch_stdin, daemon=True).start()
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    await stop.wait()
    server.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--data-delay", type=float, default=float(os.environ.get("SMTP_SINK_DATA_DELAY") or 0))
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--ignore-stdin", action="store_true", help="run until signalled even if stdin closes")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    os.makedirs(args.dir, exist_ok=True)
    if os.environ.get("SMTP_SINK_VERBOSE") != "1":
        logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
