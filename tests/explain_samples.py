"""Hand-built bounces for the explanation tests, with their BounceReport.

Messages are assembled piece by piece so the byte offsets of every human part
(``HumanPart``) are known exactly, independently of ``gateway.bounce.parse``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from gateway.bounce.report import (
    CATEGORY_SENDER_NOT_ALLOWED,
    CATEGORY_SENDER_NOT_AUTHENTICATED,
    FORMAT_RFC3464,
    FORMAT_RFC6533,
    FORMAT_TEXT,
    BounceReport,
    HumanPart,
    OriginalMessage,
    RecipientReport,
)

#: variant -> (status, Exchange token for the diagnostic)
VARIANT_CODES: dict[str, tuple[str, str]] = {
    "organization": ("5.7.12", "Sender was not authenticated by organization"),
    "group": ("5.7.133", "RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required"),
    "mailbox": ("5.7.134", "RESOLVER.RST.SenderNotAuthenticatedForMailbox"),
    "public_folder": ("5.7.135", "Sender was not authenticated for public folder"),
    "mail_user": ("5.7.136", "Sender was not authenticated"),
    "legacy": ("5.7.1", "RESOLVER.RST.AuthRequired; authentication required"),
    "sender_not_allowed": ("5.7.124", "Sender not in allowed-senders list"),
}


@dataclass
class Leaf:
    headers: list[str]
    body: bytes
    #: (content_type, charset, transfer_encoding) when this is a human part.
    human: tuple[str, str | None, str] | None = None


@dataclass
class Multi:
    content_type: str
    boundary: str
    parts: list[Leaf | Multi]
    preamble: bytes = b""
    epilogue: bytes = b""
    extra_headers: list[str] = field(default_factory=list)


def _serialise(node: Leaf | Multi, nl: bytes, offset: int, humans: list[HumanPart]) -> bytes:
    """Bytes of a part (headers, blank line, body); record human parts' offsets."""
    if isinstance(node, Leaf):
        head = b"".join(h.encode("utf-8") + nl for h in node.headers) + nl
        if node.human:
            ctype, charset, cte = node.human
            humans.append(
                HumanPart(
                    ctype, charset, cte, offset, offset + len(head), offset + len(head) + len(node.body)
                )
            )
        return head + node.body
    head_lines = [f'Content-Type: {node.content_type}; boundary="{node.boundary}"', *node.extra_headers]
    head = b"".join(h.encode() + nl for h in head_lines) + nl
    return head + _multipart_body(node, nl, offset + len(head), humans)


def _multipart_body(node: Multi, nl: bytes, offset: int, humans: list[HumanPart]) -> bytes:
    out = node.preamble
    for part in node.parts:
        out += b"--" + node.boundary.encode() + nl
        out += _serialise(part, nl, offset + len(out), humans)
        out += nl
    out += b"--" + node.boundary.encode() + b"--" + nl + node.epilogue
    return out


def build(root_headers: list[str], root: Leaf | Multi, nl: bytes = b"\r\n") -> tuple[bytes, list[HumanPart]]:
    humans: list[HumanPart] = []
    head = b"".join(h.encode("utf-8") + nl for h in root_headers)
    if isinstance(root, Multi):
        ct = [f'Content-Type: {root.content_type}; boundary="{root.boundary}"', *root.extra_headers]
        head += b"".join(h.encode() + nl for h in ct) + nl
        return head + _multipart_body(root, nl, len(head), humans), humans
    head += b"".join(h.encode("utf-8") + nl for h in root.headers) + nl
    if root.human:
        ctype, charset, cte = root.human
        humans.append(HumanPart(ctype, charset, cte, 0, len(head), len(head) + len(root.body)))
    return head + root.body, humans


def encode_body(text: str, charset: str, cte: str, nl: bytes) -> bytes:
    raw = text.replace("\n", nl.decode()).encode(charset)
    if cte == "base64":
        b = base64.b64encode(raw)
        return nl.join(b[i : i + 76] for i in range(0, len(b), 76)) + nl
    if cte == "quoted-printable":
        return binascii.b2a_qp(raw, istext=True)
    return raw


PLAIN = """Delivery has failed to these recipients or groups:

{rcpts}
Your message couldn't be delivered. The recipient only accepts email from authenticated senders.

Diagnostic information for administrators:

Generating server: TY2PR01MB0001.jpnprd01.prod.outlook.com

{diags}
"""

HTML = """<html>
<head>
<meta http-equiv="Content-Type" content="text/html; charset={charset}">
</head>
<body dir="ltr" style="font-family: Calibri">
<p><b><font color="#000066" size="3">Your message to {first} couldn't be delivered.</font></b></p>
<p>The recipient only accepts email from authenticated senders.</p>
</body>
</html>
"""

JA_PLAIN = """次の受信者またはグループへの配信に失敗しました:

{rcpts}
メッセージを配信できませんでした。

管理者向けの診断情報:

{diags}
"""


@dataclass
class Sample:
    name: str
    data: bytes
    report: BounceReport


def recipient(address: str, variant: str) -> RecipientReport:
    status, token = VARIANT_CODES[variant]
    category = (
        CATEGORY_SENDER_NOT_ALLOWED if variant == "sender_not_allowed" else CATEGORY_SENDER_NOT_AUTHENTICATED
    )
    return RecipientReport(
        recipient=address,
        action="failed",
        status=status,
        diagnostic=f"smtp; 550 {status} {token}",
        remote_mta="dns; TY2PR01MB0001.jpnprd01.prod.outlook.com",
        category=category,
        variant="allowed_senders" if variant == "sender_not_allowed" else variant,
    )


def make(
    recipients: list[RecipientReport],
    *,
    layout: str = "alternative",  # alternative | text | non_mime | rfc6533
    charset: str = "us-ascii",
    cte: str = "7bit",
    html_charset: str | None = None,
    html_cte: str | None = None,
    nl: bytes = b"\r\n",
    japanese: bool = False,
    subject: str = "Quarterly report",
    preamble: bytes = b"This is a multi-part message in MIME format.\r\n",
    epilogue: bytes = b"",
    html_without_body: bool = False,
) -> Sample:
    rcpts = "\n".join(r.recipient or "" for r in recipients)
    diags = "\n".join(
        f"{r.recipient}\nRemote Server returned '{(r.diagnostic or '')[6:]}'" for r in recipients
    )
    text = (JA_PLAIN if japanese else PLAIN).format(rcpts=rcpts, diags=diags)
    plain = Leaf(
        [f'Content-Type: text/plain; charset="{charset}"', f"Content-Transfer-Encoding: {cte}"],
        encode_body(text, charset, cte, nl),
        ("text/plain", charset, cte),
    )
    hcs, hcte = html_charset or charset, html_cte or cte
    html_text = HTML.format(charset=hcs, first=recipients[0].recipient)
    if html_without_body:
        html_text = re.sub(r"</?(html|head|body)[^>]*>\n?", "", html_text)
    html = Leaf(
        [f"Content-Type: text/html; charset={hcs}", f"Content-Transfer-Encoding: {hcte}"],
        encode_body(html_text, hcs, hcte, nl),
        ("text/html", hcs, hcte),
    )
    groups = []
    for r in recipients:
        groups.append(
            f"Final-Recipient: rfc822;{r.recipient}\nAction: failed\nStatus: {r.status}\n"
            f"Diagnostic-Code: {r.diagnostic}\nRemote-MTA: {r.remote_mta}\n"
        )
    ds_text = (
        "Reporting-MTA: dns;TY2PR01MB0001.jpnprd01.prod.outlook.com\n"
        "Arrival-Date: Mon, 3 Jun 2024 01:02:03 +0000\n\n"
    )
    ds_text += "\n".join(groups)
    ds_body = ds_text.replace("\n", nl.decode()).encode("utf-8")
    original_headers = (
        "From: Kijitora <kijitora@example.com>\nTo: "
        + ", ".join(r.recipient or "" for r in recipients)
        + "\n"
        f"Subject: {subject}\nDate: Mon, 3 Jun 2024 10:00:00 +0900\n"
        "Message-ID: <orig-1@example.com>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n"
    )
    orig = original_headers.replace("\n", nl.decode()).encode("utf-8")
    original = OriginalMessage(
        message_id="<orig-1@example.com>",
        sender="Kijitora <kijitora@example.com>",
        subject=subject,
        date="Mon, 3 Jun 2024 10:00:00 +0900",
    )
    root_headers = [
        "From: Microsoft Outlook <postmaster@example.onmicrosoft.com>",
        "To: <kijitora@example.com>",
        "Date: Mon, 3 Jun 2024 01:02:04 +0000",
        "Subject: Undeliverable: " + subject.encode("ascii", "replace").decode(),
        "Message-ID: <ndr-1@TY2PR01MB0001.jpnprd01.prod.outlook.com>",
        "MIME-Version: 1.0",
    ]
    fmt = FORMAT_RFC3464
    if layout == "non_mime":
        root: Leaf | Multi = Leaf(
            [],
            encode_body(text + "\n--- original headers ---\n" + original_headers, charset, cte, nl),
            ("text/plain", None, "7bit"),
        )
        root_headers = [h for h in root_headers if not h.startswith("MIME-Version")]
        fmt = FORMAT_TEXT
    else:
        ds_type, rfc822_type = "message/delivery-status", "text/rfc822-headers"
        if layout == "rfc6533":
            ds_type, rfc822_type, fmt = (
                "message/global-delivery-status",
                "message/global-headers",
                FORMAT_RFC6533,
            )
        first: Leaf | Multi = plain
        if layout in ("alternative", "rfc6533"):
            first = Multi("multipart/alternative", "alt-7d1f", [plain, html], extra_headers=[])
        root = Multi(
            "multipart/report; report-type=delivery-status",
            "rpt-b1c2d3",
            [
                first,
                Leaf(
                    [f"Content-Type: {ds_type}"]
                    + (["Content-Transfer-Encoding: 8bit"] if layout == "rfc6533" else []),
                    ds_body,
                ),
                Leaf([f"Content-Type: {rfc822_type}"], orig),
            ],
            preamble=preamble.replace(b"\r\n", nl),
            epilogue=epilogue,
        )
    data, humans = build(root_headers, root, nl)
    report = BounceReport(
        is_bounce=True,
        format=fmt,
        reporting_mta="TY2PR01MB0001.jpnprd01.prod.outlook.com",
        message_id="<ndr-1@TY2PR01MB0001.jpnprd01.prod.outlook.com>",
        original=original,
        recipients=recipients,
        human_parts=tuple(humans),
    )
    return Sample(layout, data, report)
