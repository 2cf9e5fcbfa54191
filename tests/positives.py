"""Builders of realistic family bounces (positives) and near misses (negatives).

Reusable by every test that needs a 5.7.12-family bounce: ``POSITIVES`` and
``NEGATIVES`` are plain lists of built messages (bytes, CRLF line ends). The
layouts follow Exchange Online / Exchange on-premises NDRs (multipart/report
with a multipart/alternative human part, RFC 3464 delivery-status, the returned
message or its headers), Postfix-written DSNs, RFC 6533 reports and text-only
bounces, with quoted-printable soft breaks placed inside codes and addresses.
"""

from __future__ import annotations

import base64
import quopri
from dataclasses import dataclass, field

from gateway.bounce.report import CATEGORY_SENDER_NOT_ALLOWED as NOT_ALLOWED
from gateway.bounce.report import CATEGORY_SENDER_NOT_AUTHENTICATED as NOT_AUTH

Expected = tuple[str, str, str, str]  # (recipient, status, category, variant)

#: A forced quoted-printable soft break is placed wherever this marker appears in a text.
SOFT = "\x00"


@dataclass(frozen=True)
class Positive:
    """A built bounce and the family recipients it must yield (other recipients are not listed)."""

    name: str
    data: bytes
    expected: list[Expected]
    format: str = "rfc3464"
    #: Where the layout and wording come from (required for layouts added from public reports).
    source: str = ""
    #: The Status field (or first code of the text) the bounce gives each expected recipient,
    #: when it differs from the expected (most specific) status.
    reported: list[str | None] | None = None


@dataclass(frozen=True)
class Negative:
    """A near miss: never a sender_not_authenticated recipient; ``is_bounce`` as given."""

    name: str
    data: bytes
    is_bounce: bool
    allowed: list[Expected] = field(default_factory=list)
    source: str = ""


# ---------------------------------------------------------------------------
# Encoding helpers.


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def qp(text: str, charset: str = "utf-8") -> str:
    """Quoted-printable with CRLF line ends; SOFT markers become soft line breaks (RFC 2045 §6.7)."""
    raw = crlf(text).encode(charset).replace(b"\r\n", b"\n")
    encoded = quopri.encodestring(raw).decode("ascii")
    return crlf(encoded.replace("=00", "=\n"))


def b64(text: str, charset: str = "utf-8") -> str:
    return crlf(base64.encodebytes(crlf(text).encode(charset)).decode("ascii"))


def encode_body(text: str, cte: str, charset: str) -> str:
    if cte == "quoted-printable":
        return qp(text, charset)
    if cte == "base64":
        return b64(text.replace(SOFT, ""), charset)
    return crlf(text.replace(SOFT, ""))


def part(ctype: str, body: str, cte: str = "7bit", charset: str | None = None) -> str:
    cs = f'; charset="{charset}"' if charset else ""
    return f"Content-Type: {ctype}{cs}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}"


def multipart(subtype: str, boundary: str, parts: list[str], extra: str = "") -> str:
    inner = "".join(f"--{boundary}\r\n{p.rstrip(chr(13) + chr(10))}\r\n" for p in parts)
    return f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}\r\n\r\n{inner}--{boundary}--\r\n'


# ---------------------------------------------------------------------------
# Wordings (Microsoft's NDR texts, abridged).

SHORT = {
    "5.7.12": "Sender was not authenticated by organization",
    "5.7.13": "Sender was not authenticated for public folder",
    "5.7.133": "Sender not authenticated for group",
    "5.7.134": "Sender was not authenticated for mailbox",
    "5.7.135": "Sender was not authenticated for public folder",
    "5.7.136": "Sender was not authenticated",
    "5.7.124": "Sender not in allowed-senders list",
}
TOKEN = {
    "5.7.12": "RESOLVER.RST.SenderAuthenticated; authentication required",
    "5.7.13": "RESOLVER.RST.NotAuthenticated; authentication required",
    "5.7.133": "RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required; Delivery restriction "
    "check failed because the sender was not authenticated when sending to this group",
    "5.7.134": "RESOLVER.RST.SenderNotAuthenticatedForMailbox; authentication required; Delivery "
    "restriction check failed because the sender was not authenticated when sending to this mailbox",
    "5.7.135": "RESOLVER.RST.SenderNotAuthenticatedForPublicFolder; authentication required",
    "5.7.136": "RESOLVER.RST.SenderNotAuthenticatedForMailUser; authentication required",
    "5.7.124": "RESOLVER.RST.NotAuthorized; not authorized, sender not in allowed-senders list",
}
VARIANT = {
    "5.7.12": (NOT_AUTH, "organization"),
    "5.7.13": (NOT_AUTH, "public_folder"),
    "5.7.133": (NOT_AUTH, "group"),
    "5.7.134": (NOT_AUTH, "mailbox"),
    "5.7.135": (NOT_AUTH, "public_folder"),
    "5.7.136": (NOT_AUTH, "mail_user"),
    "5.7.124": (NOT_ALLOWED, "allowed_senders"),
}

EXO_MTA = "TYCPR01MB8437.jpnprd01.prod.outlook.com"
SENDER = "taro.yamada@example.org"


def exo_plain(rcpt: str, code: str, *, split_code: bool = True, split_addr: bool = True) -> str:
    """Exchange Online's text/plain NDR, with soft-break markers inside the code and the address."""
    shown_code = code[:5] + SOFT + code[5:] if split_code else code
    local, domain = rcpt.split("@")
    shown_addr = f"{local[:2]}{SOFT}{local[2:]}@{domain}" if split_addr else rcpt
    filler = "x" * 40  # pushes the diagnostic line past the 76-column limit
    return (
        "Your message to the recipient couldn't be delivered.\n\n"
        f"{rcpt} wasn't found or can't accept your message: {SHORT[code]}.\n\n"
        "Diagnostic information for administrators:\n\n"
        f"Generating server: {EXO_MTA}\n\n"
        f"{shown_addr}\n"
        f"Remote Server returned '550 {shown_code} {TOKEN[code]} [{filler}]'\n\n"
        "Original message headers:\n\n"
        f"From: {SENDER}\nSubject: Quarterly report\n"
    )


def exo_html(rcpt: str, code: str) -> str:
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head><body>'
        f"<p><b>Your message to {rcpt} couldn't be delivered.</b></p>"
        f"<p>{SHORT[code]}</p><p>Diagnostic information for administrators:</p>"
        f"<p>Generating server: {EXO_MTA}<br>{rcpt}<br>"
        f"Remote Server returned '550 {code} {TOKEN[code]}'</p></body></html>\n"
    )


JA_PLAIN = (
    "メッセージを配信できませんでした。\n\n"
    "{rcpt} がメッセージを受け付けなかったか、見つかりませんでした: 認証されていない送信者です。\n\n"
    "管理者向けの診断情報:\n\n生成サーバー: " + EXO_MTA + "\n\n{rcpt}\n"
    "Remote Server returned '550 {code} {token}'\n"
)


def status_group(rcpt: str, code: str, diag: str, remote: str | None = None, action: str = "failed") -> str:
    remote_line = f"Remote-MTA: dns;{remote}\n" if remote else ""
    return (
        f"Final-Recipient: rfc822;{rcpt}\nAction: {action}\nStatus: {code}\n{remote_line}"
        f"Diagnostic-Code: smtp;{diag}\n"
    )


def delivery_status(groups: list[str], reporting: str = EXO_MTA, arrival: bool = True) -> str:
    head = f"Reporting-MTA: dns;{reporting}\n"
    if arrival:
        head += "Received-From-MTA: dns;mail.example.org\nArrival-Date: Mon, 2 Jun 2025 01:02:03 +0000\n"
    return crlf(head + "\n" + "\n".join(groups))


def original_message(rcpt: str, headers_only: bool = False) -> str:
    headers = crlf(
        f"From: Taro Yamada <{SENDER}>\nTo: {rcpt}\nSubject: Quarterly report\n"
        "Date: Mon, 2 Jun 2025 10:02:00 +0900\nMessage-ID: <orig-0001@example.org>\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
    )
    if headers_only:
        return part("text/rfc822-headers", headers)
    return f"Content-Type: message/rfc822\r\n\r\n{headers}\r\nHello, please find the report.\r\n"


def root_headers(
    subject: str, boundary: str | None, *, ctype: str | None = None, frm: str | None = None
) -> str:
    frm = frm or "Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@example.org>"
    ct = ctype or f'multipart/report; report-type=delivery-status; boundary="{boundary}"'
    return crlf(
        "Return-Path: <>\n"
        f"From: {frm}\nTo: {SENDER}\nDate: Mon, 2 Jun 2025 01:02:05 +0000\nSubject: {subject}\n"
        f"Message-ID: <ndr-{abs(hash(subject)) % 10**8}@{EXO_MTA}>\nMIME-Version: 1.0\n"
        f"Content-Type: {ct}\nX-MS-Exchange-Message-Is-Ndr:\nAuto-Submitted: auto-replied\n"
    )


def exo_ndr(
    rcpt: str,
    code: str,
    *,
    cte: str = "quoted-printable",
    charset: str = "utf-8",
    japanese: bool = False,
    related: bool = False,
    headers_only: bool = False,
    extra: list[tuple[str, str, str]] | None = None,
    html: bool = True,
) -> bytes:
    """An Exchange Online NDR: report(alternative(plain, html), delivery-status, original)."""
    if japanese:
        plain = JA_PLAIN.format(rcpt=rcpt, code=code, token=TOKEN[code])
        subject = "=?utf-8?B?" + base64.b64encode("配信不能: 四半期報告".encode()).decode() + "?="
    else:
        plain = exo_plain(rcpt, code)
        subject = "Undeliverable: Quarterly report"
    alt_parts = [part("text/plain", encode_body(plain, cte, charset), cte, charset)]
    if html:
        html_part = part("text/html", encode_body(exo_html(rcpt, code), cte, "utf-8"), cte, "utf-8")
        if related:
            image = part("image/png", b64("not really a png"), "base64")
            alt_parts.append(multipart("related", "rel-b3", [html_part, image]))
        else:
            alt_parts.append(html_part)
    human = multipart("alternative", "alt-b2", alt_parts) if html else alt_parts[0]
    groups = [status_group(rcpt, code, f"550 {code} {TOKEN[code]}")]
    for other, other_code, diag in extra or []:
        groups.append(status_group(other, other_code, diag))
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(groups)
    body = multipart("report", "rep-b1", [human, ds, original_message(rcpt, headers_only)])
    body = body.split("\r\n\r\n", 1)[1]
    return (root_headers(subject, "rep-b1") + "\r\n" + body).encode("utf-8")


def legacy_ndr(rcpt: str, *, cte: str = "quoted-printable", charset: str = "us-ascii") -> bytes:
    """Exchange 2007-2013 on-premises: 5.7.1 RESOLVER.RST.AuthRequired."""
    plain = (
        "Delivery has failed to these recipients or groups:\n\n"
        f"{rcpt}\nYour message can't be delivered because delivery to this address is restricted.\n\n"
        "Diagnostic information for administrators:\n\nGenerating server: EXCH01.corp.example.net\n\n"
        f"{rcpt}\n#550 5.7.1 RESOLVER.RST.AuthRequired; authentication required ##\n"
    )
    html_text = (
        f"<html><body><p>Delivery has failed to {rcpt}</p>"
        "<p>#550 5.7.1 RESOLVER.RST.AuthRequired</p></body></html>\n"
    )
    alt = multipart(
        "alternative",
        "leg-b2",
        [
            part("text/plain", encode_body(plain, cte, charset), cte, charset),
            part("text/html", encode_body(html_text, cte, charset), cte, charset),
        ],
    )
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, "5.7.1", "550 5.7.1 RESOLVER.RST.AuthRequired; authentication required")],
        reporting="EXCH01.corp.example.net",
    )
    body = multipart("report", "leg-b1", [alt, ds, original_message(rcpt, headers_only=True)]).split(
        "\r\n\r\n", 1
    )[1]
    return (
        root_headers("Undeliverable: Quarterly report", "leg-b1", frm="postmaster@corp.example.net")
        + "\r\n"
        + body
    ).encode()


def iso2022_ndr(rcpt: str, code: str) -> bytes:
    """Japanese Exchange NDR whose human part is ISO-2022-JP in 7bit."""
    plain = JA_PLAIN.format(rcpt=rcpt, code=code, token=TOKEN[code])
    human = 'Content-Type: text/plain; charset="iso-2022-jp"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n'
    human_bytes = human.encode() + crlf(plain).encode("iso-2022-jp")
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, code, f"550 {code} {TOKEN[code]}")]
    )
    subject = "=?iso-2022-jp?B?" + base64.b64encode("配信不能: 報告".encode("iso-2022-jp")).decode() + "?="
    head = root_headers(subject, "jp-b1").encode()
    return (
        head
        + b"\r\n--jp-b1\r\n"
        + human_bytes
        + b"\r\n--jp-b1\r\n"
        + ds.encode()
        + b"\r\n--jp-b1\r\n"
        + original_message(rcpt, True).encode()
        + b"\r\n--jp-b1--\r\n"
    )


def rfc6533_ndr(rcpt: str, code: str) -> bytes:
    """RFC 6533 SMTPUTF8 report: message/global-delivery-status with a UTF-8 recipient."""
    human = part(
        "text/plain",
        crlf(f"配信できませんでした / could not be delivered to {rcpt}\n{code}\n"),
        "8bit",
        "utf-8",
    )
    ds = "Content-Type: message/global-delivery-status\r\n\r\n" + crlf(
        f"Reporting-MTA: dns;{EXO_MTA}\n\nFinal-Recipient: utf-8;{rcpt}\nAction: failed\nStatus: {code}\n"
        f"Diagnostic-Code: smtp;550 {code} {TOKEN[code]}\n"
    )
    orig = "Content-Type: message/global-headers\r\n\r\n" + crlf(
        f"From: 山田 <{SENDER}>\nTo: {rcpt}\nSubject: 報告\nMessage-ID: <u8@example.org>\n"
    )
    body = multipart("report", "u8-b1", [human, ds, orig]).split("\r\n\r\n", 1)[1]
    head = root_headers(
        "Undeliverable: 報告",
        None,
        ctype='multipart/report; report-type=global-delivery-status; boundary="u8-b1"',
    )
    return (head + "\r\n" + body).encode("utf-8")


def postfix_dsn(rcpt: str, code: str) -> bytes:
    """Postfix's bounce daemon quoting an Exchange Online rejection (8bit human part, folded diagnostic)."""
    host = "example-jp.mail.protection.outlook.com"
    text = (
        "This is the mail system at host mail.example.org.\n\n"
        "I'm sorry to have to inform you that your message could not\n"
        "be delivered to one or more recipients.\n\n                   The mail system\n\n"
        f"<{rcpt}>: host {host}[52.101.0.7] said: 550 {code}"
        f" {TOKEN[code][:60]} (in reply to end of DATA command)\n"
    )
    diag = f"550 {code}\n    {TOKEN[code]}"
    ds = "Content-Type: message/delivery-status\r\n\r\n" + crlf(
        "Reporting-MTA: dns; mail.example.org\nX-Postfix-Queue-ID: 4bW1x2Y3\n"
        "Arrival-Date: Mon,  2 Jun 2025 10:02:00 +0900 (JST)\n\n"
        f"Final-Recipient: rfc822; {rcpt}\n"
        f"Original-Recipient: rfc822;{rcpt}\nAction: failed\nStatus: {code}\n"
        f"Remote-MTA: dns; {host}\nDiagnostic-Code: smtp; {diag}\n"
    )
    body = multipart(
        "report", "pf-b1", [part("text/plain", crlf(text), "8bit", "utf-8"), ds, original_message(rcpt)]
    ).split("\r\n\r\n", 1)[1]
    head = crlf(
        "Return-Path: <>\nFrom: MAILER-DAEMON@mail.example.org (Mail Delivery System)\n"
        "Subject: Undelivered Mail Returned to Sender\n"
        f"To: {SENDER}\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="pf-b1"\n'
        "Message-Id: <20250602010205.1@mail.example.org>\n"
    )
    return (head + "\r\n" + body).encode("utf-8")


def text_only(rcpt: str, code: str, cte: str = "quoted-printable") -> bytes:
    """A bounce with no report: one text/plain part carrying Exchange's text."""
    head = crlf(
        "Return-Path: <>\nFrom: postmaster@example.org\n"
        f"To: {SENDER}\nSubject: Undeliverable: Quarterly report\n"
        f'MIME-Version: 1.0\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: {cte}\n'
    )
    return (head + "\r\n" + encode_body(exo_plain(rcpt, code), cte, "utf-8")).encode()


def _exp(rcpt: str, code: str) -> Expected:
    cat, var = VARIANT[code]
    return (rcpt, code, cat, var)


def _build_positives() -> list[Positive]:
    out: list[Positive] = []
    codes_ = ["5.7.12", "5.7.133", "5.7.134", "5.7.135", "5.7.13", "5.7.136", "5.7.124"]
    rcpts = {
        "5.7.12": "board@contoso.example",
        "5.7.133": "sales-team@contoso.example",
        "5.7.134": "hanako.suzuki@contoso.example",
        "5.7.135": "pf-inbox@contoso.example",
        "5.7.13": "pf-archive@contoso.example",
        "5.7.136": "partner.contact@contoso.example",
        "5.7.124": "vip-list@contoso.example",
    }
    for code in codes_:
        r = rcpts[code]
        out.append(Positive(f"exo-qp-{code}", exo_ndr(r, code), [_exp(r, code)]))
        out.append(Positive(f"exo-base64-{code}", exo_ndr(r, code, cte="base64"), [_exp(r, code)]))
    for code in ("5.7.133", "5.7.134"):
        r = rcpts[code]
        out.append(
            Positive(f"exo-8bit-related-{code}", exo_ndr(r, code, cte="8bit", related=True), [_exp(r, code)])
        )
        out.append(Positive(f"exo-headers-only-{code}", exo_ndr(r, code, headers_only=True), [_exp(r, code)]))
        out.append(Positive(f"exo-ja-utf8-qp-{code}", exo_ndr(r, code, japanese=True), [_exp(r, code)]))
        out.append(
            Positive(
                f"exo-ja-utf8-b64-{code}", exo_ndr(r, code, japanese=True, cte="base64"), [_exp(r, code)]
            )
        )
        out.append(Positive(f"exo-ja-iso2022-{code}", iso2022_ndr(r, code), [_exp(r, code)]))
        out.append(Positive(f"postfix-quoting-exo-{code}", postfix_dsn(r, code), [_exp(r, code)]))
        out.append(Positive(f"text-only-qp-{code}", text_only(r, code), [_exp(r, code)], format="text"))
        out.append(
            Positive(f"text-only-b64-{code}", text_only(r, code, "base64"), [_exp(r, code)], format="text")
        )
    out.append(
        Positive(
            "exo-plain-only-5.7.136",
            exo_ndr(rcpts["5.7.136"], "5.7.136", html=False),
            [_exp(rcpts["5.7.136"], "5.7.136")],
        )
    )
    out.append(
        Positive(
            "text-only-5.7.12",
            text_only(rcpts["5.7.12"], "5.7.12"),
            [_exp(rcpts["5.7.12"], "5.7.12")],
            format="text",
        )
    )
    u8 = "営業部@例え.jp"
    out.append(
        Positive(
            "rfc6533-utf8-recipient-5.7.134",
            rfc6533_ndr(u8, "5.7.134"),
            [_exp(u8, "5.7.134")],
            format="rfc6533",
        )
    )
    multi = [
        ("unknown.user@fabrikam.example", "5.1.1", "550 5.1.1 User unknown"),
        ("full@fabrikam.example", "5.2.2", "552 5.2.2 Mailbox full"),
    ]
    r = rcpts["5.7.133"]
    out.append(
        Positive("multi-recipient-one-family", exo_ndr(r, "5.7.133", extra=multi), [_exp(r, "5.7.133")])
    )
    for cte in ("quoted-printable", "base64", "8bit"):
        lr = "restricted-dl@corp.example.net"
        out.append(
            Positive(
                f"legacy-authrequired-{cte}", legacy_ndr(lr, cte=cte), [(lr, "5.7.1", NOT_AUTH, "legacy")]
            )
        )
    return out


# ---------------------------------------------------------------------------
# Layouts seen in public reports (issue reports, Microsoft's articles), each row citing its source.

#: Microsoft Learn, "Non-delivery reports in Exchange Online" (the NDR's parts: user information,
#: "Diagnostic information for administrators", "Remote Server returned '...'", original headers).
SRC_EXO_NDR = "Microsoft Learn: Non-delivery reports in Exchange Online (NDR layout)"
#: Exchange Online's wrapper around a remote code, as quoted in public GitHub issue reports:
#: "Remote Server returned '554 5.7.0 < #5.7.133 smtp;550 5.7.133 RESOLVER.RST....>'".
SRC_WRAPPED = "public GitHub issue reports quoting Exchange Online's '554 5.7.0 < #5.7.133 ...>' wrapper"

WRAPPED_133 = (
    "554 5.7.0 < #5.7.133 smtp;550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication "
    "required; Delivery restriction check failed because the sender was not authenticated when sending to "
    "this group>"
)
WRAPPED_134 = (
    "554 5.7.0 < #5.7.134 smtp;550 5.7.134 RESOLVER.RST.SenderNotAuthenticatedForMailbox; authentication "
    "required; Delivery restriction check failed because the sender was not authenticated when sending to "
    "this mailbox>"
)
#: KB 3028012's spelling (no "Not").
KB_5712 = (
    "550 5.7.12 RESOLVER.RST.SenderAuthenticated; Delivery restriction check failed as sender not "
    "authenticated"
)
#: Microsoft Learn, "Fix email delivery issues for error code 5.7.193 in Exchange Online".
UNIFIED_193 = (
    "550 5.7.193 UnifiedGroupAgent; Delivery failed because the sender isn't a group member or external "
    "senders aren't permitted to send to this group."
)


def exo_reply_ndr(rcpt: str, status: str, reply: str, short: str, *, cte: str = "quoted-printable") -> bytes:
    """Exchange Online's report around any remote reply: human text and Diagnostic-Code quote ``reply``."""
    plain = (
        "Your message to the recipient couldn't be delivered.\n\n"
        f"{rcpt} wasn't found or can't accept your message: {short}.\n\n"
        "Diagnostic information for administrators:\n\n"
        f"Generating server: {EXO_MTA}\n\n{rcpt}\nRemote Server returned '{reply}'\n\n"
        f"Original message headers:\n\nFrom: {SENDER}\nSubject: Quarterly report\n"
    )
    human = part("text/plain", encode_body(plain, cte, "utf-8"), cte, "utf-8")
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, status, reply)]
    )
    body = multipart("report", "rep-w1", [human, ds, original_message(rcpt, True)]).split("\r\n\r\n", 1)[1]
    return (root_headers("Undeliverable: Quarterly report", "rep-w1") + "\r\n" + body).encode("utf-8")


def exo_reply_text_only(rcpt: str, reply: str, short: str) -> bytes:
    """Exchange's text alone (no report), quoting ``reply``."""
    head = crlf(
        "Return-Path: <>\nFrom: postmaster@example.org\n"
        f"To: {SENDER}\nSubject: Undeliverable: Quarterly report\n"
        'MIME-Version: 1.0\nContent-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 7bit\n'
    )
    text = (
        f"Your message to {rcpt} couldn't be delivered: {short}.\n\n"
        "Diagnostic information for administrators:\n\n"
        f"Generating server: {EXO_MTA}\n\n{rcpt}\nRemote Server returned '{reply}'\n"
    )
    return (head + "\r\n" + crlf(text)).encode()


def relay_dsn(rcpt: str, status: str, reply: str, remote: str = "mx1.contoso.example") -> bytes:
    """A non-Microsoft relay's RFC 3464 report quoting the remote reply (no Microsoft host in it)."""
    text = part(
        "text/plain",
        crlf(f"Your message could not be delivered to {rcpt}.\nThe remote server said: {reply}\n"),
        "7bit",
        "us-ascii",
    )
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, status, reply, remote=remote)], reporting="relay.example.org", arrival=False
    )
    body = multipart("report", "rly-b1", [text, ds, original_message(rcpt, True)]).split("\r\n\r\n", 1)[1]
    head = crlf(
        f"Return-Path: <>\nFrom: MAILER-DAEMON@relay.example.org\nTo: {SENDER}\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="rly-b1"\n'
    )
    return (head + "\r\n" + body).encode()


def gateway_wrapped(
    ndr: bytes,
    rcpt: str,
    *,
    return_path: str = "<>",
    subject: str = "Undeliverable: Quarterly report",
    notice: str | None = None,
    frm: str = "Mail Gateway <postmaster@gw.example.org>",
) -> bytes:
    """A relaying gateway's own short notice with the NDR attached as message/rfc822 (RFC 2046 §5.2.1)."""
    notice = notice or (
        f"Your message to {rcpt} was returned by the mail gateway gw.example.org.\n"
        "The delivery report from the recipient's system is attached.\n"
    )
    head = crlf(
        f"Return-Path: {return_path}\nFrom: {frm}\nTo: {SENDER}\nSubject: {subject}\n"
        "Date: Mon, 2 Jun 2025 01:03:00 +0000\nMessage-ID: <gw-0001@gw.example.org>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="gw-b1"\n'
    )
    body = (
        "--gw-b1\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
        + crlf(notice)
        + "\r\n--gw-b1\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
    )
    return (head + "\r\n" + body).encode() + ndr + b"\r\n--gw-b1--\r\n"


def exchange2003_ndr(rcpt: str, reply_code: str, reply: str) -> bytes:
    """Exchange Server 2003's text NDR: "'addr' on <date>", then the reason and "<host #code ...>"."""
    text = (
        "Your message did not reach some or all of the intended recipients.\n\n"
        "      Subject:\tQuarterly report\n      Sent:\t6/2/2025 10:02 AM\n\n"
        "The following recipient(s) cannot be reached:\n\n"
        f"      '{rcpt}' on 6/2/2025 10:02 AM\n"
        "            You do not have permission to send to this recipient.  For assistance, contact your "
        "system administrator.\n"
        f"            <exch2003.corp.example.net #{reply_code} smtp;{reply}>\n"
    )
    head = crlf(
        "Return-Path: <>\nFrom: System Administrator <postmaster@corp.example.net>\n"
        f"To: {SENDER}\nSubject: Undeliverable: Quarterly report\nMIME-Version: 1.0\n"
        "X-Mailer: Internet Mail Service (5.5.2653.19)\n"
        'Content-Type: text/plain; charset="us-ascii"\nContent-Transfer-Encoding: 7bit\n'
    )
    return (head + "\r\n" + crlf(text)).encode()


def _build_layouts() -> tuple[list[Positive], list[Negative]]:
    grp, mbx = "sales-team@contoso.example", "hanako.suzuki@contoso.example"
    m365 = "project-x@contoso.example"
    pos = [
        Positive(
            "exo-wrapped-5.7.0-5.7.133",
            exo_reply_ndr(grp, "5.7.0", WRAPPED_133, SHORT["5.7.133"]),
            [(grp, "5.7.133", NOT_AUTH, "group")],
            source=SRC_WRAPPED + "; " + SRC_EXO_NDR,
            reported=["5.7.0"],
        ),
        Positive(
            "exo-wrapped-5.7.0-5.7.134-base64",
            exo_reply_ndr(mbx, "5.7.0", WRAPPED_134, SHORT["5.7.134"], cte="base64"),
            [(mbx, "5.7.134", NOT_AUTH, "mailbox")],
            source=SRC_WRAPPED + "; " + SRC_EXO_NDR,
            reported=["5.7.0"],
        ),
        Positive(
            "text-only-wrapped-5.7.0-5.7.133",
            exo_reply_text_only(grp, WRAPPED_133, SHORT["5.7.133"]),
            [(grp, "5.7.133", NOT_AUTH, "group")],
            format="text",
            source=SRC_WRAPPED + " (Exchange's human part alone)",
            reported=["5.7.0"],
        ),
        Positive(
            "gateway-wraps-exo-ndr-5.7.133",
            gateway_wrapped(exo_ndr(grp, "5.7.133"), grp),
            [(grp, "5.7.133", NOT_AUTH, "group")],
            source="RFC 2046 section 5.2.1 (message/rfc822) around an Exchange Online NDR; "
            "relaying gateways' notice-plus-attachment layout seen in public bounce reports",
        ),
        Positive(
            "gateway-wraps-wrapped-exo-ndr-5.7.134",
            gateway_wrapped(exo_reply_ndr(mbx, "5.7.0", WRAPPED_134, SHORT["5.7.134"]), mbx),
            [(mbx, "5.7.134", NOT_AUTH, "mailbox")],
            source="RFC 2046 section 5.2.1 around " + SRC_WRAPPED,
            reported=["5.7.0"],
        ),
        Positive(
            "exchange2003-quoted-recipient-5.7.133",
            exchange2003_ndr(grp, "5.7.133", "550 5.7.133 " + TOKEN["5.7.133"]),
            [(grp, "5.7.133", NOT_AUTH, "group")],
            format="text",
            source="Exchange Server 2003 NDR text (\"The following recipient(s) cannot be reached: 'addr' on "
            '<date>", "<host #code smtp;...>") as quoted in public forum reports',
        ),
        Positive(
            "exo-5.7.12-kb3028012-spelling",
            exo_reply_ndr("board@contoso.example", "5.7.12", KB_5712, SHORT["5.7.12"]),
            [("board@contoso.example", "5.7.12", NOT_AUTH, "organization")],
            source="Microsoft KB 3028012 (NDR 5.7.12): '550 5.7.12 RESOLVER.RST.SenderAuthenticated; ...'",
        ),
        Positive(
            "relay-5.7.0-token-only-sender-authenticated",
            relay_dsn(
                "board@contoso.example",
                "5.7.0",
                "554 5.7.0 RESOLVER.RST.SenderAuthenticated; "
                "Delivery restriction check failed as sender not authenticated",
            ),
            [("board@contoso.example", "5.7.0", NOT_AUTH, "organization")],
            source="Microsoft KB 3028012's token behind a generic 5.7.0 (no family code in the reply)",
        ),
        Positive(
            "exo-5.7.193-unified-group",
            exo_reply_ndr(
                m365, "5.7.193", UNIFIED_193, "Delivery failed because the sender isn't a group member"
            ),
            [(m365, "5.7.193", NOT_AUTH, "microsoft365_group")],
            source="Microsoft Learn: Fix email delivery issues for error code 5.7.193 in Exchange Online",
        ),
        Positive(
            "relay-quoting-5.7.193-unifiedgroupagent-only-evidence",
            relay_dsn(m365, "5.7.193", UNIFIED_193),
            [(m365, "5.7.193", NOT_AUTH, "microsoft365_group")],
            source="Microsoft Learn 5.7.193 article's reply quoted by a non-Microsoft relay "
            "(the UnifiedGroupAgent token is the only Microsoft evidence)",
        ),
    ]
    ndr = exo_ndr(grp, "5.7.133")
    neg = [
        Negative(
            "person-forwards-ndr-as-attachment",
            gateway_wrapped(
                ndr,
                grp,
                return_path=f"<{SENDER}>",
                subject="Can you look at this?",
                notice="Hi, my message to the sales team came back. What does this mean?\n",
                frm=f"Taro Yamada <{SENDER}>",
            ),
            is_bounce=False,
            source="a person attaching an NDR (RFC 2046 section 5.2.1) to a message of their own",
        ),
        Negative(
            "legacy-5.7.1-notauthorized-accept-list",
            _generic_dsn(
                "restricted-dl@corp.example.net",
                "5.7.1",
                "550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized",
                "EXCH01.corp.example.net",
            ),
            is_bounce=True,
            source="Exchange 2007-2013 on-premises accept-list refusal (the relative of 5.7.124, not the "
            "authentication case)",
        ),
        Negative(
            "exo-wrapped-5.7.0-5.1.1-not-family",
            exo_reply_ndr(
                "nobody@contoso.example",
                "5.7.0",
                "554 5.7.0 < #5.1.1 smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found>",
                "Recipient not found",
            ),
            is_bounce=True,
            source=SRC_WRAPPED + " around 5.1.1 (recipient unknown)",
        ),
        Negative(
            "5.7.193-without-microsoft",
            _generic_dsn(
                "team@example.com",
                "5.7.193",
                "550 5.7.193 Sender not permitted",
                "mx1.example.com",
            ),
            is_bounce=True,
            source="5.7.193 from a non-Microsoft MTA: not Microsoft's meaning",
        ),
    ]
    return pos, neg


# ---------------------------------------------------------------------------
# Negatives.


def _generic_dsn(
    rcpt: str, code: str, diag: str, reporting: str, action: str = "failed", subject: str = "Returned mail"
) -> bytes:
    text = part(
        "text/plain",
        crlf(f"The original message could not be delivered to {rcpt}.\n{diag}\n"),
        "7bit",
        "us-ascii",
    )
    ds = "Content-Type: message/delivery-status\r\n\r\n" + delivery_status(
        [status_group(rcpt, code, diag, action=action)], reporting=reporting, arrival=False
    )
    body = multipart("report", "neg-b1", [text, ds, original_message(rcpt, True)]).split("\r\n\r\n", 1)[1]
    head = crlf(
        f"Return-Path: <>\nFrom: MAILER-DAEMON@{reporting}\n"
        f"To: {SENDER}\nSubject: {subject}\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="neg-b1"\n'
    )
    return (head + "\r\n" + body).encode()


def _build_negatives() -> list[Negative]:
    out: list[Negative] = []
    out.append(
        Negative(
            "password-transition-432-4.7.12",
            _generic_dsn(
                "user@example.net",
                "4.7.12",
                "432 4.7.12 A password transition is needed",
                "mx.example.net",
                action="delayed",
                subject="Delayed Mail (still being retried)",
            ),
            is_bounce=True,
        )
    )
    out.append(
        Negative(
            "5.7.124-is-not-5.7.12",
            exo_ndr("vip@contoso.example", "5.7.124"),
            is_bounce=True,
            allowed=[("vip@contoso.example", "5.7.124", NOT_ALLOWED, "allowed_senders")],
        )
    )
    out.append(
        Negative(
            "5.7.129-exchange",
            _generic_dsn(
                "list@contoso.example",
                "5.7.129",
                "550 5.7.129 RESOLVER.RST.RestrictedToRecipientsPermission; not permitted",
                EXO_MTA,
            ),
            is_bounce=True,
        )
    )
    out.append(
        Negative(
            "sendmail-5.7.13-account-disabled",
            _generic_dsn(
                "olduser@example.edu", "5.7.13", "550 5.7.13 User account disabled", "mail.example.edu"
            ),
            is_bounce=True,
        )
    )
    out.append(
        Negative(
            "5.7.12-without-microsoft",
            _generic_dsn(
                "someone@example.com", "5.7.12", "550 5.7.12 Sender not authenticated", "mx1.example.com"
            ),
            is_bounce=True,
        )
    )
    mysql = crlf(
        "From: Dev Ops <ops@example.org>\nTo: team@example.org\n"
        "Subject: Upgrade notes\nMessage-ID: <m1@example.org>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
        "We upgraded MySQL 5.7.12 to 8.0 last night. Postfix 3.7.1 untouched; see ticket 5.7.133.\n"
    )
    out.append(Negative("mysql-5.7.12-ordinary-mail", mysql.encode(), is_bounce=False))
    ndr = exo_ndr("sales-team@contoso.example", "5.7.133").decode()
    fwd = (
        crlf(
            f"Return-Path: <{SENDER}>\nFrom: Taro Yamada <{SENDER}>\nTo: helpdesk@example.org\n"
            "Subject: Fw: Undeliverable: Quarterly report\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="fw-b1"\n\n'
            "--fw-b1\nContent-Type: text/plain; charset=us-ascii\n"
            "\nHi, I got this bounce (550 5.7.133), can you help?\n"
            "--fw-b1\nContent-Type: message/rfc822\n\n"
        )
        + ndr
        + "\r\n--fw-b1--\r\n"
    )
    out.append(Negative("user-forwards-ndr-to-helpdesk", fwd.encode(), is_bounce=False))
    return out


LAYOUT_POSITIVES, LAYOUT_NEGATIVES = _build_layouts()
POSITIVES: list[Positive] = _build_positives() + LAYOUT_POSITIVES
NEGATIVES: list[Negative] = _build_negatives() + LAYOUT_NEGATIVES
#: Alias with the spelling used in the brief.
negatives = NEGATIVES
positives = POSITIVES


#: Body lines an mbox writer quotes (RFC 4155 section 2): "From " always, ">From " in mboxrd.
MBOX_QUOTED_LINES = b"From the team: the figures are attached.\r\n>From a reply, quoted.\r\n"


def with_mbox_quoted_lines(name: str = "exo-qp-5.7.133") -> bytes:
    """The positive ``name`` with :data:`MBOX_QUOTED_LINES` in its returned message's body."""
    data = next(p.data for p in POSITIVES if p.name == name)
    anchor = b"Hello, please find the report.\r\n"
    assert data.count(anchor) == 1, "the positive's returned message changed"
    return data.replace(anchor, anchor + MBOX_QUOTED_LINES)
