"""Milter mode end to end: a real Postfix with deploy/postfix/milter.main.cf as shipped.

``tests/postfix_lab.py`` runs the placement "milter": the shipped lines (port substituted), a
site with a remote users' domain (example.com, its mailbox server on 127.0.0.2) and local
virtual mailboxes (local.test), and ``bouncegw milter`` on a loopback port. What is proven:

- flow 1: a remote ``550 5.7.133`` makes Postfix's bounce daemon write two DSNs, one to a local
  mailbox (it never crosses SMTP) and one to the remote sender domain; each arrives once,
  explained, its delivery-status part as Postfix wrote it, its incident recorded;
- flow 2: an Exchange Online NDR mailed in over SMTP is explained too, its delivery-status part
  byte for byte the one Exchange Online wrote;
- ordinary mail arrives byte-identical (apart from Received:), accepted when its headers end;
- with bouncegw stopped, mail and bounces still flow (milter_default_action = accept);
- a family DSN that cannot be recorded is tempfailed, and Postfix keeps the original and
  writes the DSN again later (never lost);
- a milter listed after bouncegw (where a DKIM signer goes) sees the explained bounce.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from email.utils import make_msgid
from pathlib import Path

import pytest

from gateway.bounce.parse import parse as parse_bounce
from tests.explain_checks import (
    HEADER_RE,
    assert_outside_identical,
    human_texts,
    parse,
)
from tests.positives import POSITIVES, exo_ndr
from tests.positives import SENDER as NDR_RECIPIENT
from tests.postfix_lab import (
    GROUP,
    LOCAL_USER,
    POSTFIX,
    REPO,
    SENDER,
    USERS_DOMAIN,
    Lab,
    postfix_dsn_fields,
    postfix_lab,
    untraced,
    wait_for_listener,
)
from tests.processes import free_port, wait_until

pytestmark = pytest.mark.external

HEADER = b"X-Bouncegw-Explained"


def original(sender: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{GROUP}>\r\nSubject: Quarterly figures\r\n"
        f"Message-ID: {make_msgid(domain='example.com')}\r\nDate: Mon, 02 Jun 2025 09:00:00 +0000\r\n\r\n"
        "Please find the figures below.\r\n"
    ).encode()


def ordinary(sender: str, to: str) -> bytes:
    return (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: Lunch\r\n"
        f"Message-ID: {make_msgid(domain='example.com')}\r\nDate: Mon, 02 Jun 2025 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        "\r\nShall we meet at noon?\r\n\u6b63\u5348\u306b\r\n.a line starting with a dot\r\n"
    ).encode()


def explained(data: bytes, incident_ids: set[str]) -> str:
    """Assert an explained DSN (report structure, family text, a recorded id); its incident id."""
    root = parse(data)
    assert root.get_content_type() == "multipart/report"
    assert root.get_param("report-type") == "delivery-status"
    value = root[HEADER.decode()]
    assert value is not None and value.startswith("5.7.133; incident="), data[:800]
    incident = value.split("incident=", 1)[1]
    assert incident in incident_ids
    text = human_texts(data)["text/plain"][0]
    assert "accepts mail only from inside its own organization" in " ".join(text.split())
    assert "メッセージは配信されませんでした" in text
    assert data.count(HEADER) == 1
    return incident


async def local_delivered(lab: Lab, count: int) -> list[bytes]:
    await wait_until(lambda: len(lab.local_mailbox()) >= count, f"{count} in the local mailbox", 120)
    await lab.wait_for_empty_queue()
    return lab.local_mailbox()


async def test_postfix_dsns_to_a_local_mailbox_and_a_remote_domain_arrive_explained_once(
    tmp_path: Path,
) -> None:
    async with postfix_lab(tmp_path, "milter") as lab:
        remote = original(SENDER)
        local = original(LOCAL_USER)
        await asyncio.to_thread(lab.submit, SENDER, [GROUP], remote)
        await asyncio.to_thread(lab.submit, LOCAL_USER, [GROUP], local)
        await lab.wait_for_messages(USERS_DOMAIN, 1)
        [mailbox_dsn] = await local_delivered(lab, 1)
        [remote_dsn] = lab.messages(USERS_DOMAIN)
        assert remote_dsn.mail_from.startswith("FROM:<>")
        rows = lab.incidents()
        assert len(rows) == 2, rows
        ids = {str(row["id"]) for row in rows}
        seen = {explained(remote_dsn.data, ids), explained(mailbox_dsn, ids)}
        assert seen == ids  # one incident each, and each DSN names its own
        assert postfix_dsn_fields(remote_dsn.data, GROUP)["Status"] == "5.7.133"
        mailbox_crlf = mailbox_dsn.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n")
        assert postfix_dsn_fields(mailbox_crlf, GROUP)["Status"] == "5.7.133"
        # The returned message is intact inside each DSN.
        assert remote in remote_dsn.data
        assert local.replace(b"\r\n", b"\n") in mailbox_dsn.replace(b"\r\n", b"\n")
        assert {row["failed_recipient"] for row in rows} == {GROUP}
        assert all(row["annotated"] is True for row in rows)
        assert lab.metric("bouncegw_milter_messages_total", outcome="explained") == 2
        # The two submissions themselves: accepted when their headers ended.
        assert lab.metric("bouncegw_milter_messages_total", outcome="headers_only") == 2
        assert lab.messages("fabrikam.test") == []


async def test_ndr_from_outside_and_ordinary_mail(tmp_path: Path) -> None:
    async with postfix_lab(tmp_path, "milter") as lab:
        ndr = exo_ndr("all-staff@contoso-exo.test", "5.7.133").replace(
            NDR_RECIPIENT.encode(), SENDER.encode()
        )
        outbound = ordinary(SENDER, "bob@fabrikam.test")
        await asyncio.to_thread(lab.submit, "", [SENDER], ndr, outside=True)
        await asyncio.to_thread(lab.submit, SENDER, ["bob@fabrikam.test"], outbound)
        await lab.wait_for_messages(USERS_DOMAIN, 1)
        await lab.wait_for_messages("fabrikam.test", 1)
        await lab.wait_for_empty_queue()
        [dsn] = lab.messages(USERS_DOMAIN)
        [row] = lab.incidents()
        explained(dsn.data, {str(row["id"])})
        assert row["failed_recipient"] == "all-staff@contoso-exo.test"
        status_part = ndr.split(b"Content-Type: message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
        assert status_part in dsn.data
        # Outside the edited human parts the NDR is byte for byte as Exchange Online wrote it
        # (Postfix drops Return-Path on receipt, drop_headers, and puts its Received: on top).
        seen = ndr.removeprefix(b"Return-Path: <>\r\n")
        report = parse_bounce(seen, envelope_sender="")
        header = HEADER_RE.match(dsn.data)
        assert header is not None
        assert_outside_identical(
            seen, header.group() + untraced(dsn.data[header.end() :]), report.human_parts
        )
        [out] = lab.messages("fabrikam.test")
        assert untraced(out.data) == outbound
        assert lab.metric("bouncegw_milter_messages_total", outcome="headers_only") == 1


async def test_stopping_bouncegw_loses_nothing(tmp_path: Path) -> None:
    async with postfix_lab(tmp_path, "milter") as lab:
        first = ordinary(SENDER, "bob@fabrikam.test")
        await asyncio.to_thread(lab.submit, SENDER, ["bob@fabrikam.test"], first)
        await lab.wait_for_messages("fabrikam.test", 1)
        await lab.stop_gateway()
        # bouncegw is gone: Postfix applies milter_default_action = accept.
        second = ordinary(SENDER, "carol@fabrikam.test")
        await asyncio.to_thread(lab.submit, SENDER, ["carol@fabrikam.test"], second)
        await asyncio.to_thread(lab.submit, LOCAL_USER, [GROUP], original(LOCAL_USER))
        await lab.wait_for_messages("fabrikam.test", 2)
        [dsn] = await local_delivered(lab, 1)
        assert [untraced(m.data) for m in lab.messages("fabrikam.test")] == [first, second]
        # The DSN got through unexplained rather than stuck or lost.
        assert HEADER not in dsn
        assert b"5.7.133" in dsn


async def test_a_single_part_bounce_gets_its_own_headers_changed_not_duplicated(tmp_path: Path) -> None:
    # A us-ascii 7bit text bounce: the block needs UTF-8 and quoted-printable, so the root
    # Content-Type and Content-Transfer-Encoding change in place (SMFIR_CHGHEADER); without
    # MIME headers at all they are added (SMFIR_ADDHEADER).
    mime = next(p for p in POSITIVES if p.name == "exchange2003-quoted-recipient-5.7.133").data
    mime = mime.replace(b"taro.yamada@example.org", SENDER.encode())
    bare = (
        b"".join(
            line
            for line in mime.split(b"\r\n\r\n", 1)[0].splitlines(keepends=True)
            if not line.lower().startswith(
                (b"mime-version:", b"content-type:", b"content-transfer-encoding:")
            )
        )
        + b"\r\n"
        + mime.split(b"\r\n\r\n", 1)[1]
    )
    async with postfix_lab(tmp_path, "milter") as lab:
        for bounce in (mime, bare):
            await asyncio.to_thread(lab.submit, "", [SENDER], bounce, outside=True)
        await lab.wait_for_messages(USERS_DOMAIN, 2)
        await lab.wait_for_empty_queue()
        assert lab.metric("bouncegw_milter_messages_total", outcome="explained") == 2
        for received in lab.messages(USERS_DOMAIN):
            head = received.data.split(b"\r\n\r\n", 1)[0].lower()
            for name in (b"mime-version:", b"content-type:", b"content-transfer-encoding:"):
                assert head.count(b"\r\n" + name) == 1, (name, head)
            root = parse(received.data)
            assert root.get_content_charset() == "utf-8"
            assert root["Content-Transfer-Encoding"] == "quoted-printable"
            text = root.get_payload(decode=True).decode("utf-8")
            assert "accepts mail only from inside its own organization" in " ".join(text.split())
            assert "The following recipient(s) cannot be reached:" in text


async def test_a_family_dsn_that_cannot_be_recorded_waits_in_postfix_and_is_not_lost(tmp_path: Path) -> None:
    # The database does not answer and the journal has room for one incident: the first DSN is
    # explained and journaled, the second is tempfailed (451 4.3.0) and Postfix keeps it.
    outage = {
        "BOUNCEGW_DATABASE__URL": f"postgresql+psycopg://bouncegw@127.0.0.1:{free_port()}/none",
        "BOUNCEGW_STORAGE__JOURNAL_MAX_BYTES": "4096",
        # At stop the journal tries the database for the rest of the grace period: keep it short.
        "BOUNCEGW_LISTENER__GRACE_PERIOD": "2",
    }
    async with postfix_lab(tmp_path, "milter", gateway_env=outage) as lab:
        await asyncio.to_thread(lab.submit, LOCAL_USER, [GROUP], original(LOCAL_USER))
        [first] = await local_delivered(lab, 1)
        assert HEADER in first
        await asyncio.to_thread(lab.submit, LOCAL_USER, [GROUP], original(LOCAL_USER))
        await wait_until(
            lambda: lab.metric("bouncegw_milter_messages_total", outcome="tempfailed") >= 1, "a tempfail", 120
        )
        # Postfix's bounce daemon could not hand the DSN over: the original message waits.
        await wait_until(lambda: "status=deferred (bounce failed)" in lab.maillog(), "bounce failed", 120)
        assert len(lab.local_mailbox()) == 1
        # bouncegw goes away (milter_default_action = accept) and Postfix retries: the DSN arrives.
        await lab.stop_gateway()
        await asyncio.to_thread(lab.flush)
        [_, second] = await local_delivered(lab, 2)
        assert HEADER not in second and b"5.7.133" in second


async def test_a_milter_listed_after_bouncegw_sees_the_explained_bounce(tmp_path: Path) -> None:
    # Why milter.main.cf lists bouncegw before OpenDKIM: Postfix hands the next milter the
    # message with the earlier milter's changes applied. A second bouncegw stands in for the
    # signer: it must find the bounce already explained (its header, its body).
    async with postfix_lab(tmp_path, "milter") as lab:
        port, http = free_port(), free_port()
        (tmp_path / "second").mkdir()
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "milter", "--listen", f"inet:127.0.0.1:{port}",
            "--database", f"sqlite:///{tmp_path / 'second' / 'db.sqlite3'}", "--http", f"127.0.0.1:{http}",
            cwd=tmp_path / "second", env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await wait_for_listener(port, second, tmp_path / "bouncegw.log")
            main_cf = lab.config_dir / "main.cf"
            first = re.search(r"^smtpd_milters = (\S+)$", main_cf.read_text(), re.MULTILINE)
            assert first is not None
            main_cf.write_text(
                main_cf.read_text().replace(first.group(), f"{first.group()}, inet:127.0.0.1:{port}")
            )
            await asyncio.to_thread(
                subprocess.run, [POSTFIX, "-c", str(lab.config_dir), "reload"], check=True
            )
            ndr = exo_ndr("all-staff@contoso-exo.test", "5.7.133").replace(
                NDR_RECIPIENT.encode(), SENDER.encode()
            )
            await asyncio.to_thread(lab.submit, "", [SENDER], ndr, outside=True)
            await lab.wait_for_messages(USERS_DOMAIN, 1)
            await lab.wait_for_empty_queue()
            seen = await asyncio.to_thread(metrics_of, http)
        finally:
            second.terminate()
            await second.wait()
        assert lab.metric("bouncegw_milter_messages_total", outcome="explained") == 1
        assert seen['bouncegw_annotations_total{outcome="already_explained"}'] == 1
        assert seen['bouncegw_milter_messages_total{outcome="explained"}'] == 0
        [dsn] = lab.messages(USERS_DOMAIN)
        assert dsn.data.count(HEADER) == 1


def metrics_of(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        lines = response.read().decode().splitlines()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if line[:1] != "#"}
