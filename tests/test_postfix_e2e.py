"""A real Postfix writes a real DSN, and it comes out of a real ``bouncegw serve`` explained.

The mail flow built here, all on loopback (see deploy/postfix/ for the production settings)::

    smtplib client ──> Postfix smtpd ──(transport: contoso-exo.test)──> smtp-sink
                          │                                             "550 5.7.133 ..."
                          │ Postfix's bounce daemon writes an RFC 3464 DSN to the sender
                          ▼
                       (transport: example.test) ──> bouncegw serve ──> RecordingServer
                                                                       (the sender's mailbox)

Postfix runs as a private instance (``postfix -c DIR start``, root needed) with chroot off, its
log in DIR, and inline transport maps so nothing touches DNS. Ordinary mail to the same domain
takes the same path, and a second copy of it goes straight to the recording server from the same
queue file (``direct.example.test``), so the two copies must be byte-identical.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import make_msgid
from pathlib import Path

import pytest

from tests.conftest import need
from tests.explain_checks import delivery_status_fields, human_texts, parse
from tests.processes import free_port, wait_for_smtp
from tests.recording_server import Received, RecordingServer

REPO = Path(__file__).resolve().parents[1]
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
#: Exchange Online's answer when a group accepts mail only from authenticated senders.
REJECTION = (
    "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required; "
    "Delivery restriction check failed because the sender was not authenticated when "
    "sending to this group"
)
SENDER = "alice@example.test"
GROUP = "all-staff@contoso-exo.test"
#: Upper bound for Postfix to deliver and bounce; the test waits for events, not for time.
DEADLINE = 120.0

pytestmark = pytest.mark.external

#: master.cf for the private instance: Debian's services, chroot column "n" so the daemons need
#: nothing copied into the queue directory (library-edges.md, "A throwaway Postfix for tests").
MASTER_CF = """\
{smtpd_listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def main_cf(directory: Path, sink_port: int, gateway_port: int, capture_port: int) -> str:
    return textwrap.dedent(f"""\
        compatibility_level = 3.6
        queue_directory = {directory}/queue
        data_directory = {directory}/data
        # Without a terminal or syslog, start errors are seen only in this file.
        maillog_file = {directory}/maillog
        maillog_file_prefixes = {directory}
        myhostname = mta.example.test
        mydomain = example.test
        myorigin = example.test
        mydestination =
        local_recipient_maps =
        alias_maps =
        alias_database =
        inet_interfaces = loopback-only
        inet_protocols = ipv4
        mynetworks = 127.0.0.0/8
        smtpd_relay_restrictions = permit_mynetworks, reject
        disable_dns_lookups = yes
        smtp_host_lookup = native
        smtp_tls_security_level = none
        smtpd_tls_security_level = none
        # The recipient's domain is "Exchange Online" (smtp-sink); the sender's domain, where the
        # DSN goes, is reached through bouncegw, as the relay host would route it in production.
        transport_maps = inline:{{
            {{ contoso-exo.test = smtp:[127.0.0.1]:{sink_port} }},
            {{ example.test = smtp:[127.0.0.1]:{gateway_port} }},
            {{ direct.example.test = smtp:[127.0.0.1]:{capture_port} }} }}
        """)


@dataclass
class Flow:
    postfix_port: int
    capture: RecordingServer
    database_url: str
    directory: Path
    postfix_root: Path

    async def wait_for_empty_queue(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while loop.time() < end:
            listing = await asyncio.to_thread(
                subprocess.run,
                [POSTQUEUE, "-c", str(self.postfix_root / "etc"), "-j"],
                capture_output=True,
                text=True,
                check=True,
            )
            if not listing.stdout.strip():  # one JSON object per queued message
                return
            await asyncio.sleep(0.2)
        raise AssertionError("Postfix's queue did not drain\n" + self.maillog())

    def maillog(self) -> str:
        path = self.postfix_root / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"


async def wait_for_messages(flow: Flow, count: int) -> list[Received]:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while len(flow.capture.messages) < count and loop.time() < end:
        await asyncio.sleep(0.1)
    assert len(flow.capture.messages) >= count, flow.maillog()
    return flow.capture.messages


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def flow(tmp_path: Path) -> AsyncIterator[Flow]:
    need(
        Path(POSTFIX).exists() and Path(SMTP_SINK).exists(),
        "Postfix is not installed (apt-get install postfix)",
    )
    need(os.geteuid() == 0, "a private Postfix instance must be started as root")
    capture = RecordingServer()
    await capture.start()
    sink_port, gateway_port, postfix_port = free_port(), free_port(), free_port()
    # Postfix's daemons run as "postfix" and must reach the queue: pytest's own temporary root is
    # private to root (0700), so the instance lives in a directory of its own, removed afterwards.
    postfix_root = Path(tempfile.mkdtemp(prefix="bouncegw-postfix-"))
    postfix_root.chmod(0o711)
    config_dir = postfix_root / "etc"
    config_dir.mkdir()
    # postfix-script creates the queue's subdirectories (with their owners), not the top ones.
    (postfix_root / "queue").mkdir()
    (postfix_root / "data").mkdir()
    shutil.chown(postfix_root / "data", "postfix")  # master.lock and the caches belong to mail_owner
    (config_dir / "main.cf").write_text(main_cf(postfix_root, sink_port, gateway_port, capture.port))
    (config_dir / "master.cf").write_text(MASTER_CF.format(smtpd_listen=f"127.0.0.1:{postfix_port}"))
    database_url = f"sqlite:///{tmp_path / 'incidents.sqlite3'}"
    (tmp_path / "bouncegw.toml").write_text(
        textwrap.dedent(f"""\
            [listener]
            listen = "127.0.0.1:{gateway_port}"
            hostname = "bouncegw.example.test"
            grace_period = 10
            [next_hop]
            address = "{capture.address}"
            tls = "none"
            [database]
            url = "{database_url}"
            [storage]
            journal_path = "{tmp_path / "journal" / "incidents.jsonl"}"
            [admin]
            http = "127.0.0.1:{free_port()}"
            """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    sink = gateway = None
    postfix_started = False
    try:
        # smtp-sink plays Exchange Online: every RCPT gets the 5.7.133 rejection.
        sink = await asyncio.create_subprocess_exec(
            SMTP_SINK,
            "-u",
            "nobody",
            "-f",
            "RCPT",
            "-B",
            REJECTION,
            f"127.0.0.1:{sink_port}",
            "100",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        gateway = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(tmp_path / "bouncegw.toml"),
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await wait_for_smtp(sink_port, sink)
        await wait_for_smtp(gateway_port, gateway)
        started = await asyncio.to_thread(
            subprocess.run, [POSTFIX, "-c", str(config_dir), "start"], capture_output=True, text=True
        )
        postfix_started = True
        maillog = postfix_root / "maillog"
        assert started.returncode == 0, started.stderr + (maillog.read_text() if maillog.exists() else "")
        await wait_for_smtp(postfix_port)
        yield Flow(postfix_port, capture, database_url, tmp_path, postfix_root)
    finally:
        if postfix_started:
            await asyncio.to_thread(stop_postfix, config_dir)
        for proc in (gateway, sink):
            if proc is not None:
                await stop_process(proc)
        await capture.stop()
        shutil.rmtree(postfix_root, ignore_errors=True)


def stop_postfix(config_dir: Path) -> None:
    """``postfix stop`` only signals the master: wait until ``postfix status`` says it has gone."""
    subprocess.run([POSTFIX, "-c", str(config_dir), "stop"], capture_output=True)
    for _ in range(600):
        if subprocess.run([POSTFIX, "-c", str(config_dir), "status"], capture_output=True).returncode:
            return
        time.sleep(0.1)
    subprocess.run([POSTFIX, "-c", str(config_dir), "abort"], capture_output=True)


def submit(port: int, sender: str, recipients: list[str], message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        assert smtp.sendmail(sender, recipients, message) == {}


def incidents(database_url: str, cwd: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "incidents",
            "list",
            "--format",
            "json",
            "--database",
            database_url,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    rows: list[dict[str, object]] = json.loads(done.stdout)
    return rows


async def test_postfix_dsn_for_a_5_7_133_rejection_comes_out_explained(flow: Flow) -> None:
    message_id = make_msgid(domain="example.test")
    original = (
        f"From: Alice <{SENDER}>\r\nTo: <{GROUP}>\r\nSubject: Quarterly figures\r\n"
        f"Message-ID: {message_id}\r\nDate: Mon, 02 Jun 2025 09:00:00 +0000\r\n\r\n"
        "Please find the figures below.\r\n"
    ).encode()
    await asyncio.to_thread(submit, flow.postfix_port, SENDER, [GROUP], original)

    [bounce] = await wait_for_messages(flow, 1)
    # Postfix's bounce daemon sends with the null sender (RFC 3464 section 2; RFC 5321 4.5.5).
    assert bounce.mail_from.startswith("FROM:<>")
    assert [r.split()[0] for r in bounce.rcpts] == [f"TO:<{SENDER}>"]
    data = bounce.data
    root = parse(data)
    assert root.get_content_type() == "multipart/report"
    assert root.get_param("report-type") == "delivery-status"
    assert root["X-Bouncegw-Explained"] is not None

    # The delivery-status part is the one Postfix wrote: the fields a parser reads are all there.
    [per_message, per_recipient] = delivery_status_fields(data)
    # Postfix's own field set (RFC 3464 sections 2.2 and 2.3, plus its X-Postfix-* extensions).
    assert [k for k, _ in per_message] == [
        "Reporting-MTA",
        "X-Postfix-Queue-ID",
        "X-Postfix-Sender",
        "Arrival-Date",
    ]
    assert [k for k, _ in per_recipient] == [
        "Final-Recipient",
        "Original-Recipient",
        "Action",
        "Status",
        "Remote-MTA",
        "Diagnostic-Code",
    ]
    queue_id = dict(per_message)["X-Postfix-Queue-ID"]
    # The same queue file that Postfix logged as bounced with the sink's reply.
    assert any(
        line.startswith(f"{queue_id}:") and "status=bounced" in line and "5.7.133" in line
        for line in (part.split(": ", 1)[1] for part in flow.maillog().splitlines() if ": " in part)
    ), flow.maillog()
    fields = {k.lower(): v for k, v in per_recipient}
    assert fields["final-recipient"].lower() == f"rfc822; {GROUP}"
    assert fields["action"] == "failed"
    assert fields["status"] == "5.7.133"
    assert "SenderNotAuthenticatedForGroup" in " ".join(fields["diagnostic-code"].split())
    assert any(k.lower() == "reporting-mta" for k, _ in per_message)
    # The explanation block sits at the top of Postfix's human part, in both languages, and
    # Postfix's own text follows it unchanged.
    # The first text/plain part is the notification; the others are inside the returned message.
    text = human_texts(data)["text/plain"][0].replace("\r\n", "\n")
    block, rule, postfix_text = text.partition("=" * 72 + "\n\n")
    assert rule, text[:400]
    assert "accepts mail only from inside its own organization" in " ".join(block.split())
    assert "メッセージは配信されませんでした" in block
    assert postfix_text.startswith("This is the mail system at host mta.example.test.")
    assert f"<{GROUP}>: host 127.0.0.1[127.0.0.1] said: 550 5.7.133" in postfix_text

    # The returned original message travels intact inside the DSN (RFC 3462 third part).
    assert original.replace(b"\r\n", b"\n") in data.replace(b"\r\n", b"\n")

    # Recorded once, queryable through the CLI the way an administrator would, and the header
    # and the block name the same incident.
    rows = await asyncio.to_thread(incidents, flow.database_url, flow.directory)
    assert len(rows) == 1, rows
    [row] = rows
    assert row["failed_recipient"] == GROUP
    assert row["status"] == "5.7.133"
    assert row["annotated"] is True
    assert row["original_message_id"] == message_id
    assert root["X-Bouncegw-Explained"] == f"5.7.133; incident={row['id']}"
    assert f"bouncegw incident: {row['id']} ({GROUP})" in block

    # Exactly once: with Postfix's queue drained, nothing else has arrived.
    await flow.wait_for_empty_queue()
    assert len(flow.capture.messages) == 1


async def test_ordinary_mail_on_the_same_path_arrives_byte_identical(flow: Flow) -> None:
    message = (
        f"From: Alice <{SENDER}>\r\nTo: Bob <bob@example.test>\r\nSubject: Lunch\r\n"
        f"Message-ID: {make_msgid(domain='example.test')}\r\nDate: Mon, 02 Jun 2025 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Shall we meet at noon?\r\n\u6b63\u5348\u306b\u4f1a\u3044\u307e\u3057\u3087\u3046\u3002\r\n"
        ".a line starting with a dot\r\n"
    ).encode()
    # One queue file, two deliveries: via bouncegw (example.test) and straight to the mailbox.
    await asyncio.to_thread(
        submit, flow.postfix_port, SENDER, ["bob@example.test", "bob@direct.example.test"], message
    )
    received = await wait_for_messages(flow, 2)
    assert len(received) == 2
    by_route = {m.rcpts[0].split()[0]: m for m in received}
    via_gateway = by_route["TO:<bob@example.test>"]
    direct = by_route["TO:<bob@direct.example.test>"]
    assert via_gateway.mail_from.split()[0] == f"FROM:<{SENDER}>"
    assert via_gateway.data == direct.data
    assert b"X-Bouncegw-Explained" not in via_gateway.data
    assert via_gateway.data.endswith(message)  # Postfix prepends only its Received header
    assert await asyncio.to_thread(incidents, flow.database_url, flow.directory) == []
