"""Every Postfix placement in deploy/postfix/, run end to end from the shipped files.

For each placement (``tests/postfix_lab.py`` builds it: the shipped main.cf/master.cf and
bouncegw.toml as they are, plus a fake internet on other loopback addresses):

- ordinary mail reaches its destination exactly once, byte-identical apart from the Received:
  fields the MTAs put on top;
- flow 1: a remote ``550 5.7.133`` at SMTP time makes Postfix's bounce daemon write a DSN, and
  that DSN reaches the sender's mailbox server exactly once, explained, its delivery-status part
  intact, the incident recorded (placements that claim it: relayhost, null-sender,
  users-domains);
- flow 2: an Exchange Online NDR mailed in from outside reaches the mailbox the same way
  (placements on the MX: users-domains, content-filter);
- no message crosses bouncegw twice (its own Received: trace appears once).

And a deliberately looping configuration (the relay host placement without the pin in
relayhost.master.cf) is stopped by bouncegw with ``554 5.4.6`` within the hop limit.
"""

from __future__ import annotations

import asyncio
from email.utils import make_msgid
from pathlib import Path

import pytest

from tests.explain_checks import delivery_status_fields, human_texts, parse
from tests.positives import SENDER as NDR_RECIPIENT
from tests.positives import exo_ndr
from tests.postfix_lab import (
    GROUP,
    PLACEMENTS,
    SENDER,
    SHIPPED,
    USERS_DOMAIN,
    Lab,
    gateway_traces,
    postfix_dsn_fields,
    postfix_lab,
    untraced,
)
from tests.recording_server import Received

pytestmark = pytest.mark.external

FLOW_1 = ["relayhost", "null-sender", "users-domains"]
FLOW_2 = ["users-domains", "content-filter"]


def test_every_shipped_placement_is_run_here() -> None:
    assert {p.main_cf for p in PLACEMENTS.values()} == {f.name for f in SHIPPED.glob("*.main.cf")}
    assert {p.master_cf for p in PLACEMENTS.values() if p.master_cf} == {
        f.name for f in SHIPPED.glob("*.master.cf")
    }
    run = set(PLACEMENTS)
    assert set(FLOW_1) <= run and set(FLOW_2) <= run


def ordinary(to: str) -> bytes:
    return (
        f"From: Alice <{SENDER}>\r\nTo: <{to}>\r\nSubject: Lunch\r\n"
        f"Message-ID: {make_msgid(domain=USERS_DOMAIN)}\r\nDate: Mon, 02 Jun 2025 12:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Shall we meet at noon?\r\n\u6b63\u5348\u306b\u4f1a\u3044\u307e\u3057\u3087\u3046\u3002\r\n"
        ".a line starting with a dot\r\n"
    ).encode()


async def delivered_once(lab: Lab, domain: str) -> Received:
    """The one message at ``domain``'s server, once Postfix has nothing left to do."""
    await lab.wait_for_messages(domain, 1)
    await lab.wait_for_empty_queue()
    messages = lab.messages(domain)
    assert len(messages) == 1, [m.data[:300] for m in messages]
    return messages[0]


def assert_explained_once(lab: Lab, dsn: Received, *, status: str, recipient: str) -> None:
    """Explained, machine-readable part intact, recorded once, and through bouncegw once."""
    data = dsn.data
    assert gateway_traces(data) == 1, data[:600]
    root = parse(data)
    assert root.get_content_type() == "multipart/report"
    assert root.get_param("report-type") == "delivery-status"
    [per_message, *groups] = delivery_status_fields(data)
    assert any(k.lower() == "reporting-mta" for k, _ in per_message)
    [fields] = [{k.lower(): v for k, v in group} for group in groups]
    assert fields["final-recipient"].lower().replace(" ", "") == f"rfc822;{recipient}"
    assert fields["action"] == "failed"
    assert fields["status"] == status
    text = human_texts(data)["text/plain"][0]
    assert "accepts mail only from inside its own organization" in " ".join(text.split())
    assert "メッセージは配信されませんでした" in text
    rows = lab.incidents()
    assert len(rows) == 1, rows
    [row] = rows
    assert row["failed_recipient"] == recipient
    assert row["status"] == status
    assert row["annotated"] is True
    assert root["X-Bouncegw-Explained"] == f"{status}; incident={row['id']}"


@pytest.mark.parametrize("placement", ["relayhost", "null-sender", "users-domains", "content-filter"])
async def test_ordinary_mail_arrives_once_and_byte_identical(placement: str, tmp_path: Path) -> None:
    async with postfix_lab(tmp_path, placement) as lab:
        outbound = ordinary("bob@fabrikam.test")
        await asyncio.to_thread(lab.submit, SENDER, ["bob@fabrikam.test"], outbound)
        inbound = ordinary(SENDER)
        if lab.placement.mx:
            await asyncio.to_thread(lab.submit, "bob@fabrikam.test", [SENDER], inbound, outside=True)
        out = await delivered_once(lab, "fabrikam.test")
        assert untraced(out.data) == outbound
        assert out.mail_from.split()[0] == f"FROM:<{SENDER}>"
        if lab.placement.mx:
            into = await delivered_once(lab, USERS_DOMAIN)
            assert untraced(into.data) == inbound
            assert b"X-Bouncegw-Explained" not in into.data
        else:
            assert lab.messages(USERS_DOMAIN) == []
        # What crossed bouncegw crossed it once; the placement decides what crosses at all.
        crossed = {
            "relayhost": (1, 0),
            "null-sender": (0, 0),
            "users-domains": (0, 1),
            "content-filter": (1, 1),
        }
        traces = (gateway_traces(out.data), *(gateway_traces(m.data) for m in lab.messages(USERS_DOMAIN)))
        assert traces == crossed[placement][: len(traces)], traces
        # and nothing else went through it (no second round of a message that was delivered).
        assert lab.metric("bouncegw_messages_total", outcome="relayed") == sum(traces)
        assert lab.incidents() == []


@pytest.mark.parametrize("placement", FLOW_1)
async def test_flow_1_postfix_dsn_for_a_5_7_133_refusal_arrives_explained_once(
    placement: str, tmp_path: Path
) -> None:
    async with postfix_lab(tmp_path, placement) as lab:
        message_id = make_msgid(domain=USERS_DOMAIN)
        original = (
            f"From: Alice <{SENDER}>\r\nTo: <{GROUP}>\r\nSubject: Quarterly figures\r\n"
            f"Message-ID: {message_id}\r\nDate: Mon, 02 Jun 2025 09:00:00 +0000\r\n\r\n"
            "Please find the figures below.\r\n"
        ).encode()
        await asyncio.to_thread(lab.submit, SENDER, [GROUP], original)
        dsn = await delivered_once(lab, USERS_DOMAIN)
        # Postfix's bounce daemon sends with the null sender (RFC 3464 section 2; RFC 5321 4.5.5).
        assert dsn.mail_from.startswith("FROM:<>")
        assert [r.split()[0] for r in dsn.rcpts] == [f"TO:<{SENDER}>"]
        assert_explained_once(lab, dsn, status="5.7.133", recipient=GROUP)
        fields = postfix_dsn_fields(dsn.data, GROUP)
        assert "SenderNotAuthenticatedForGroup" in " ".join(fields["Diagnostic-Code"].split())
        # The explanation sits on top of Postfix's own text, and the returned message is intact.
        text = human_texts(dsn.data)["text/plain"][0].replace("\r\n", "\n")
        block, rule, postfix_text = text.partition("=" * 72 + "\n\n")
        assert rule and postfix_text.startswith(f"This is the mail system at host mta.{USERS_DOMAIN}.")
        assert original.replace(b"\r\n", b"\n") in dsn.data.replace(b"\r\n", b"\n")
        [row] = lab.incidents()
        assert row["original_message_id"] == message_id
        assert f"bouncegw incident: {row['id']} ({GROUP})" in block
        assert lab.messages("fabrikam.test") == []
        # Through bouncegw: the DSN once, and in placement 1 the refused message once before it.
        relayed = {"relayhost": 2, "null-sender": 1, "users-domains": 1}[placement]
        assert lab.metric("bouncegw_messages_total", outcome="relayed") == relayed


@pytest.mark.parametrize("placement", FLOW_2)
async def test_flow_2_exchange_online_ndr_from_outside_arrives_explained_once(
    placement: str, tmp_path: Path
) -> None:
    async with postfix_lab(tmp_path, placement) as lab:
        ndr = exo_ndr("all-staff@contoso-exo.test", "5.7.133").replace(
            NDR_RECIPIENT.encode(), SENDER.encode()
        )
        # Exchange Online mails the NDR to the sender's domain: it arrives at the MX from outside.
        await asyncio.to_thread(lab.submit, "", [SENDER], ndr, outside=True)
        dsn = await delivered_once(lab, USERS_DOMAIN)
        assert dsn.mail_from.startswith("FROM:<>")
        assert_explained_once(lab, dsn, status="5.7.133", recipient="all-staff@contoso-exo.test")
        # The delivery-status part is byte for byte the one Exchange Online wrote.
        status_part = ndr.split(b"Content-Type: message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
        assert status_part in dsn.data
        assert lab.metric("bouncegw_messages_total", outcome="relayed") == 1


async def test_a_looping_configuration_is_refused_with_5_4_6_within_the_hop_limit(tmp_path: Path) -> None:
    # The relay host placement without its pin: mail handed back to Postfix goes to the relay
    # host, which is bouncegw again.
    unpinned = ("  -o content_filter=direct:\n", "")
    async with postfix_lab(tmp_path, "relayhost", edit_master_cf=unpinned) as lab:
        await asyncio.to_thread(lab.submit, SENDER, ["bob@fabrikam.test"], ordinary("bob@fabrikam.test"))
        await lab.wait_for_empty_queue()
        log = lab.maillog()
        assert "554 5.4.6" in log, log
        assert "too many hops" not in log, log
        assert lab.messages("fabrikam.test") == []
        refused = lab.metric("bouncegw_loops_refused_total", reason="passes")
        relayed = lab.metric("bouncegw_messages_total", outcome="relayed")
        rejected = lab.metric("bouncegw_messages_total", outcome="rejected")
        # The message, and Postfix's DSN for it, each cross bouncegw relay.max_passes (3) times
        # and are refused on the next round; nothing goes round 50 times.
        assert refused >= 1 and rejected == refused
        assert relayed == 3 * refused, (relayed, refused)
        print(f"loop: relayed={relayed:.0f} refused={refused:.0f}")
