"""Abuse: a bounce that tries to hand the recipient's administrator a command.

Each bounce goes through the real gateway (loopback SMTP in, a recording next hop out). The
delivery-status part or the returned original's From carries PowerShell the attacker wants
pasted: a second statement after ``";``, a ``$(...)`` subexpression, a quote that closes the
literal. In both parts of the explained bounce, in both languages, every command line must
be a single statement whose literals hold no attacker text (the block shows a placeholder and
says why), and no line of the block may start with the MIME boundary prefix "--".
"""

from __future__ import annotations

import email
from email import policy

import pytest

from gateway.explain.commands import is_plain_address
from tests.chaos.harness import Msg, check, report, send_all, tagged
from tests.conftest import GatewayFactory
from tests.positives import (
    EXO_MTA,
    TOKEN,
    crlf,
    delivery_status,
    encode_body,
    multipart,
    part,
    root_headers,
    status_group,
)
from tests.powershell_tokens import command_lines, html_command_lines, literals, tokenize
from tests.recording_server import RecordingServer

RCPT_INJECTION = 'a"; Remove-Mailbox ceo -Confirm:$false; "b@contoso.example'
RCPT_SUBEXPRESSION = "x$(Start-Process calc)@contoso.example"
SENDER_INJECTION = "a'; Remove-Mailbox ceo -Confirm:$false; 'b@contoso.example"
SENDER_SUBEXPRESSION = "x$(Start-Process calc)@contoso.example"
#: Fragments of attacker text that must never appear in a command line.
ATTACKER_TEXT = ("Remove-Mailbox", "Start-Process", "$(", "ceo", "calc")


def attack_ndr(rcpt: str, code: str, sender: str) -> bytes:
    """An Exchange Online-shaped NDR: ``rcpt`` as Final-Recipient, ``sender`` as the original's From."""
    plain = (
        f"Your message to {rcpt} couldn't be delivered.\n\n"
        "Diagnostic information for administrators:\n\n"
        f"Generating server: {EXO_MTA}\n\n"
        f"{rcpt}\nRemote Server returned '550 {code} {TOKEN[code]}'\n"
    )
    html = (
        "<html><body><p>Your message to the recipient couldn't be delivered.</p>"
        f"<p>550 {code}</p></body></html>"
    )
    human = multipart(
        "alternative",
        "alt-b2",
        [
            part("text/plain", encode_body(plain, "quoted-printable", "utf-8"), "quoted-printable", "utf-8"),
            part("text/html", encode_body(html, "quoted-printable", "utf-8"), "quoted-printable", "utf-8"),
        ],
    )
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, code, f"550 {code} {TOKEN[code]}")]
    )
    original = part(
        "text/rfc822-headers",
        crlf(
            f"From: {sender}\nTo: {rcpt}\nSubject: Quarterly report\n"
            "Date: Mon, 30 Nov 2026 10:02:00 +0900\nMessage-ID: <orig-attack@example.org>\n"
        ),
    )
    body = multipart("report", "rep-b1", [human, ds, original]).split("\r\n\r\n", 1)[1]
    return (root_headers("Undeliverable: Quarterly report", "rep-b1") + "\r\n" + body).encode("utf-8")


def notice_parts(data: bytes) -> tuple[str, str]:
    """The decoded text/plain and text/html of the notice (the first of each)."""
    found: dict[str, str] = {}
    for leaf in email.message_from_bytes(data, policy=policy.compat32).walk():
        kind = leaf.get_content_type()
        if kind in ("text/plain", "text/html") and kind not in found:
            raw = leaf.get_payload(decode=True)
            assert isinstance(raw, bytes)
            found[kind] = raw.decode(leaf.get_content_charset() or "us-ascii").replace("\r\n", "\n")
    return found["text/plain"], found["text/html"]


CASES = [
    # (name, status, recipient, original From, which placeholder must replace the attack)
    ("rcpt-second-statement", "5.7.134", RCPT_INJECTION, "Taro <taro.yamada@example.org>", "recipient"),
    ("rcpt-subexpression", "5.7.134", RCPT_SUBEXPRESSION, "Taro <taro.yamada@example.org>", "recipient"),
    (
        "rcpt-group-subexpression",
        "5.7.133",
        RCPT_SUBEXPRESSION,
        "Taro <taro.yamada@example.org>",
        "recipient",
    ),
    ("sender-quote-break-124", "5.7.124", "team@contoso.example", SENDER_INJECTION, "sender"),
    (
        "sender-subexpression-124",
        "5.7.124",
        "team@contoso.example",
        f"Eve <{SENDER_SUBEXPRESSION}>",
        "sender",
    ),
    ("both-12", "5.7.12", RCPT_INJECTION, f"Eve <{SENDER_SUBEXPRESSION}>", "both"),
]
PLACEHOLDERS = {
    "recipient": ("<recipient address>", "<受信者のアドレス>"),
    "sender": ("<sender address>", "<送信者のアドレス>"),
}


@pytest.mark.parametrize(("name", "code", "rcpt", "sender", "replaced"), CASES, ids=[c[0] for c in CASES])
async def test_no_attacker_text_in_any_command_line(
    name: str,
    code: str,
    rcpt: str,
    sender: str,
    replaced: str,
    hop: RecordingServer,
    make_gateway: GatewayFactory,
) -> None:
    app = await make_gateway(hop.address)
    data = attack_ndr(rcpt, code, sender)
    outcomes = await send_all(app.listener.port, [Msg(name, tagged(name, data))])
    figures = check(f"abuse_commands_{name}", outcomes, hop.messages, None)
    report(figures)
    assert figures.accepted == 1 and len(hop.messages) == 1
    out = hop.messages[0].message
    assert out.startswith(b"X-Bouncegw-Explained: " + code.encode())  # explained, not merely relayed
    plain, html = notice_parts(out)
    block_html = html[html.index('class="bouncegw-explained"') :]
    block_html = block_html[: block_html.index("Your message to the recipient")]
    text_lines = command_lines(plain)
    html_lines = html_command_lines(block_html)
    assert text_lines and html_lines
    for line in text_lines + html_lines:
        values = literals(tokenize(line))  # one statement with quoted arguments, or it raises
        assert not any(fragment in line for fragment in ATTACKER_TEXT), line
        assert all(is_plain_address(v) or v.startswith(("<", "\\<")) for v in values), line
    joined = "\n".join(text_lines)
    for kind in ("recipient", "sender") if replaced == "both" else (replaced,):
        for placeholder in PLACEHOLDERS[kind]:
            assert f"'{placeholder}'" in joined, (kind, placeholder)
    # The reason is given in both languages, in both parts.
    for reason in ("plain email address", "通常のメール アドレス"):
        assert reason in " ".join(plain.split()) and reason in " ".join(html.split())
    if replaced != "sender":
        # The recipient as written is still shown to the reader, as data, in the prose.
        assert "Remove-Mailbox" in plain or "Start-Process" in plain


async def test_no_line_of_the_block_starts_with_the_boundary_prefix(
    hop: RecordingServer, make_gateway: GatewayFactory
) -> None:
    """RFC 2046 section 5.1.1; the report's boundary is "rep-b1" and the recipient is "--rep-b1@..."."""
    app = await make_gateway(hop.address)
    data = attack_ndr("--rep-b1@contoso.example", "5.7.133", "Taro <--rep-b1@contoso.example>")
    outcomes = await send_all(app.listener.port, [Msg("boundary-prefix", tagged("boundary-prefix", data))])
    report(check("abuse_commands_boundary_prefix", outcomes, hop.messages, None))
    out = hop.messages[0].message
    assert out.startswith(b"X-Bouncegw-Explained: 5.7.133")  # explained: the output check passed
    plain, html = notice_parts(out)
    block = plain.split("Your message to --rep-b1@contoso.example couldn't")[0]
    assert "(宛先: --rep-b1@contoso.example)" in block
    assert [line for line in block.split("\n") if line.startswith("--")] == []
    assert [line for line in html.split("\n") if line.startswith("--")] == []
    # Inside quotes the address is a valid literal: a plain address does reach the commands.
    assert "Set-DistributionGroup -Identity '--rep-b1@contoso.example'" in block
