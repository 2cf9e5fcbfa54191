"""The benchmark's messages: ordinary text mail of a given size, a padded family DSN and a
full-size Exchange Online NDR (:func:`exchange_online`).

Each message is a template with a :data:`SEQ` token in its Message-ID, and a family bounce's
template has it in each MIME boundary too. The Python load generator replaces it per message, so
every family DSN is a distinct bounce (bouncegw's incident fingerprint is the bounce's bytes,
RFC 5322 section 3.6.4 asks for unique Message-IDs anyway) with boundaries of its own, as real
bounces have (Exchange writes a fresh GUID for each NDR): no cache keyed by a part's header
block meets the same multipart header twice. Files handed to smtp-source get a fixed value.
"""

from __future__ import annotations

import base64
import hashlib
import html
import itertools
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

SEQ = b"@@SEQ@@"
KIB = 1024
#: The family recipient of both family DSNs (a load generator may vary it per message).
FAMILY_RECIPIENT = "sales-team@contoso.example"

_LINE = b"The quick brown fox jumps over the lazy dog while the relay hop measures itself."


def _pad_lines(size: int, prefix: bytes = b"") -> bytes:
    """Body text of about ``size`` bytes in lines well under RFC 5321's 1000-octet limit."""
    line = prefix + _LINE[: 76 - len(prefix)] + b"\r\n"
    return line * max(1, size // len(line))


def ordinary(size: int) -> bytes:
    """A plain-text message of about ``size`` bytes (headers included), CRLF line ends."""
    headers = (
        b"From: Sender <sender@bench.example>\r\n"
        b"To: Recipient <rcpt@bench.example>\r\n"
        b"Subject: Benchmark message\r\n"
        b"Date: Mon, 2 Jun 2025 01:02:03 +0000\r\n"
        b"Message-ID: <" + SEQ + b"@bench.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: text/plain; charset="us-ascii"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n\r\n"
    )
    return headers + _pad_lines(size - len(headers))


#: A boundary parameter (RFC 2046 section 5.1.1) and, in the body, a delimiter line.
_BOUNDARY_PARAM = re.compile(rb'boundary="?([^";\r\n]+)"?', re.IGNORECASE)


def _fresh_boundaries(data: bytes) -> bytes:
    """``data`` with :data:`SEQ` added to every MIME boundary, in its parameter and its
    delimiter lines (after the load generator's replacement, digits and dots: valid bchars)."""
    for boundary in dict.fromkeys(_BOUNDARY_PARAM.findall(data)):
        escaped = re.escape(boundary)
        fresh = boundary + b"-" + SEQ
        # Whole tokens only: one boundary may be the start of another.
        data = re.sub(
            rb'(?i)(boundary="?)' + escaped + rb'(?=["\s;]|$)',
            lambda m, fresh=fresh: m.group(1) + fresh,
            data,
        )
        data = re.sub(
            rb"(?m)^--" + escaped + rb"(?=--|[ \t]*\r?$)", lambda m, fresh=fresh: b"--" + fresh, data
        )
    return data


def family(size: int = 5 * KIB, name: str = "exo-qp-5.7.133") -> bytes:
    """An Exchange Online 5.7.133 NDR from ``tests.positives``, padded inside the returned message."""
    from tests.positives import POSITIVES

    data = next(p.data for p in POSITIVES if p.name == name)
    head, sep, rest = data.partition(b"Message-ID: <")
    assert sep, "the positive has no Message-ID to vary"
    data = head + sep + SEQ + b"-" + rest
    assert FAMILY_RECIPIENT.encode() in data, "the positive's recipient changed"
    # The padding goes into the returned message's body (a message/rfc822 part): it only makes
    # the bounce bigger, like a real returned message does, without touching the report parts.
    anchor = b"Hello, please find the report.\r\n"
    assert anchor in data, "the positive's returned message changed"
    data = _fresh_boundaries(data)
    return data.replace(anchor, anchor + _pad_lines(max(0, size - len(data))), 1)


# ---------------------------------------------------------------------------
# A full-size Exchange Online NDR.
#
# Everything here is synthetic: hosts follow Exchange Online's naming (outlook.com-like) or
# are under .example, signatures and ids are hashes of labels, the texts are our own.

_EXO_RCPT = FAMILY_RECIPIENT
_EXO_CODE = "5.7.133"
_EXO_SUBJECT = "Q3 partner pricing and order forms"
#: The generating server (in contoso's tenant) and the sender's mailbox server (example.org's).
_EXO_GEN = "SN7PR04MB8812.namprd04.prod.outlook.com"
_EXO_SRC = "TYCPR01MB8437.jpnprd01.prod.outlook.com"
_EXO_TLS = "version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
_EXO_BUILD = "15.20.8722.29"
_ORIG_ID = "TYCPR01MB84370C2D5E1F4A3B9C6D7E8F01A2B3C4D5E6A@TYCPR01MB8437.jpnprd01.prod.outlook.com"
_FILLER = "X-MS-Exchange-AntiSpam-MessageData-0"

#: The original message's path, first hop first: (time, from, to, with). The returned message
#: carries a Received field for each SMTP hop; the NDR's "Message Hops" table lists them.
_HOPS = [
    ("00:14:27", _EXO_SRC, _EXO_SRC, "mapi"),
    ("00:14:28", _EXO_SRC, "TYCP286CA0117.JPNP286.PROD.OUTLOOK.COM", "Microsoft SMTP Server"),
    (
        "00:14:28",
        "TYCP286CA0117.JPNP286.PROD.OUTLOOK.COM",
        "JPN01-TYC-obe.outbound.protection.outlook.com",
        "Microsoft SMTP Server",
    ),
    (
        "00:14:29",
        "JPN01-TYC-obe.outbound.protection.outlook.com",
        "BN1PEPF00004680.namprd04.prod.outlook.com",
        "Microsoft SMTP Server",
    ),
    ("00:14:29", "BN1PEPF00004680.namprd04.prod.outlook.com", _EXO_GEN, "Microsoft SMTP Server"),
]

#: A header field: (name, value); the value may be folded ("\n" + whitespace).
_Field = tuple[str, str]
#: Ranks for cutting a header block to size: _MUST fields are always there, then the lower
#: the rank, the sooner a field is kept (see _fit).
_MUST, _HIGH, _MID, _LOW = 0, 1, 2, 3


def _pos() -> ModuleType:
    """``tests.positives`` (its builders and wordings), imported on first use like in family()."""
    from tests import positives

    return positives


def _digest(label: str, n: int) -> bytes:
    """``n`` stable pseudo-random bytes: synthetic signatures and ids, distinct per ``label``."""
    return hashlib.shake_256(label.encode()).digest(n)


def _b64(label: str, n: int) -> str:
    return base64.b64encode(_digest(label, n)).decode("ascii")


def _guid(label: str) -> str:
    h = _digest(label, 16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_REPORT_BOUNDARY = _guid("ndr/report")
_ALTERNATIVE_BOUNDARY = _guid("ndr/alternative")


def _fold(token: str, width: int = 72) -> str:
    """A long token (a signature's base64) cut into continuation lines."""
    return "\n ".join(token[i : i + width] for i in range(0, len(token), width))


def _encoded_words(label: str, size: int) -> str:
    """About ``size`` bytes of Exchange's folded ``=?us-ascii?Q?...?=`` antispam data."""
    count = max(1, size // 78)  # 75-character encoded words (60 of payload), CRLF + space
    data = _b64(label, count * 45)
    return "\n ".join(f"=?us-ascii?Q?{data[i : i + 60]}?=" for i in range(0, count * 60, 60))


def _render(fields: list[_Field]) -> str:
    crlf: Callable[[str], str] = _pos().crlf
    lines = (f"{name}: {value}" if value else f"{name}:" for name, value in fields)
    return crlf("".join(line + "\n" for line in lines))


def _fit(fields: list[tuple[_Field, int]], budget: int) -> list[_Field]:
    """The (field, rank) list cut to about ``budget`` bytes: the _MUST fields, then the others
    rank by rank (in order within a rank) while they fit, then the antispam data (the
    ``_FILLER`` entry) sized to take what is left, as Exchange's own MessageData-0 field is.
    The fields keep their order."""
    keep = [rank == _MUST for _, rank in fields]
    room = budget - len(_render([f for f, rank in fields if rank == _MUST]))
    for i in sorted(range(len(fields)), key=lambda i: fields[i][1]):  # stable: order kept in a rank
        field_, rank = fields[i]
        size = len(_render([field_]))
        if rank != _MUST and field_[0] != _FILLER and size <= room:
            keep[i], room = True, room - size
    out: list[_Field] = []
    for (field_, _), kept in zip(fields, keep, strict=True):
        if field_[0] == _FILLER:
            chunk_count = ("X-MS-Exchange-AntiSpam-MessageData-ChunkCount", "1")
            room -= len(_render([chunk_count])) + len(_FILLER) + 4
            if room > 150:
                out += [chunk_count, (_FILLER, _encoded_words(f"{_FILLER}/{budget}", room))]
        elif kept:
            out.append(field_)
    return out


def _received(frm: str, by: str, when: str, via: str = "") -> _Field:
    ip = _digest(frm, 2)
    return (
        "Received",
        f"from {frm} (2603:10b6:{ip.hex()}::{ip[0] % 64:x}) by\n {by} with Microsoft SMTP Server\n"
        f" ({_EXO_TLS}) id {_EXO_BUILD}{via};\n Tue, 3 Jun 2025 {when} +0000",
    )


def _dkim(domain: str, label: str) -> _Field:
    return (
        "DKIM-Signature",
        f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=selector1;\n"
        " h=From:Date:Subject:Message-ID:Content-Type:MIME-Version:X-MS-Exchange-SenderADCheck;\n"
        f" bh={_b64(label + '/bh', 32)};\n b={_fold(_b64(label + '/b', 256))}",
    )


def _arc(label: str, spf_domain: str, header_domain: str) -> list[_Field]:
    return [
        (
            "ARC-Seal",
            "i=1; a=rsa-sha256; s=arcselector10001; d=microsoft.com; cv=none;\n"
            f" b={_fold(_b64(label + '/seal', 256))}",
        ),
        (
            "ARC-Message-Signature",
            "i=1; a=rsa-sha256; c=relaxed/relaxed; d=microsoft.com;\n s=arcselector10001;\n"
            " h=From:Date:Subject:Message-ID:Content-Type:MIME-Version:\n"
            " X-MS-Exchange-AntiSpam-MessageData-ChunkCount:X-MS-Exchange-AntiSpam-MessageData-0;\n"
            f" bh={_b64(label + '/bh', 32)};\n b={_fold(_b64(label + '/ams', 256))}",
        ),
        (
            "ARC-Authentication-Results",
            f"i=1; mx.microsoft.com 1; spf=pass\n smtp.mailfrom={spf_domain}; dmarc=pass action=none\n"
            f" header.from={header_domain}; dkim=pass header.d={header_domain}; arc=none",
        ),
    ]


def _auth_results(ip: str, helo: str, domain: str) -> list[_Field]:
    return [
        (
            "Authentication-Results",
            f"spf=pass (sender IP is {ip})\n smtp.helo={helo}; dkim=pass (signature was\n"
            f" verified) header.d={domain};dmarc=pass action=none\n"
            f" header.from={domain};compauth=pass reason=100",
        ),
        (
            "Received-SPF",
            f"Pass (protection.outlook.com: domain of\n {helo} designates {ip} as\n"
            f" permitted sender) receiver=protection.outlook.com; client-ip={ip};\n helo={helo}; pr=C",
        ),
    ]


def _tenant_stamps(label: str, server: str, org: str) -> list[tuple[_Field, int]]:
    """The X-MS-Exchange-* / X-Microsoft-Antispam* / X-Forefront-* fields a sending tenant
    stamps (rank _LOW; the antispam data is sized to the budget)."""
    network_id, short = _guid(label + "/net"), server.split(".")[0]
    fields: list[_Field] = [
        ("X-MS-PublicTrafficType", "Email"),
        ("X-MS-TrafficTypeDiagnostic", f"{short}:EE_|{short}:EE_"),
        ("X-MS-Office365-Filtering-Correlation-Id", network_id),
        ("X-MS-Exchange-SenderADCheck", "1"),
        ("X-MS-Exchange-AntiSpam-Relay", "0"),
        ("X-Microsoft-Antispam", "BCL:0;ARA:13230040|1800799024|366016|376014|38070700018;"),
        ("X-Microsoft-Antispam-Message-Info", _encoded_words(label + "/info", 900)),
        (
            "X-Forefront-Antispam-Report",
            f"CIP:255.255.255.255;CTRY:;LANG:en;SCL:1;SRV:;IPV:NLI;SFV:NSPM;H:{server};\n"
            " PTR:;CAT:NONE;SFS:(13230040)(1800799024)(366016)(376014)(38070700018);DIR:OUT;SFP:1101;",
        ),
        (_FILLER, ""),
        ("X-OriginatorOrg", org),
        ("X-MS-Exchange-CrossTenant-Network-Message-Id", network_id),
        ("X-MS-Exchange-CrossTenant-AuthSource", server),
        ("X-MS-Exchange-CrossTenant-AuthAs", "Internal"),
        ("X-MS-Exchange-CrossTenant-OriginalArrivalTime", "03 Jun 2025 00:14:29.5172\n (UTC)"),
        ("X-MS-Exchange-CrossTenant-FromEntityHeader", "Hosted"),
        ("X-MS-Exchange-CrossTenant-Id", _guid(org + "/tenant")),
        ("X-MS-Exchange-CrossTenant-MailboxType", "HOSTED"),
        ("X-MS-Exchange-Transport-CrossTenantHeadersStamped", short),
    ]
    return [(f, _LOW) for f in fields]


def _original_fields(budget: int) -> list[_Field]:
    """The returned message's header block, as contoso's tenant received it, cut to about
    ``budget`` bytes (600 at least: one Received field and the ordinary fields)."""
    received = [_received(frm, to, when) for when, frm, to, _ in reversed(_HOPS[1:])]
    fields: list[tuple[_Field, int]] = [(received[0], _MUST)]
    fields += [(f, _MID) for f in received[1:]]
    fields += [(f, _MID) for f in _auth_results("40.107.74.52", _HOPS[2][2], "example.org")]
    fields += [(f, _LOW) for f in _arc("orig", "example.org", "example.org")]
    fields.append((_dkim("example.org", "orig"), _HIGH))
    fields += [
        (("From", f"Taro Yamada <{_pos().SENDER}>"), _MUST),
        (("To", f"Sales Team <{_EXO_RCPT}>"), _MUST),
        (("Subject", _EXO_SUBJECT), _MUST),
        (("Thread-Topic", _EXO_SUBJECT), _MID),
        (("Thread-Index", _b64("thread", 22)), _MID),
        (("Date", "Tue, 3 Jun 2025 00:14:26 +0000"), _MUST),
        (("Message-ID", f"<{_ORIG_ID}>"), _MUST),
        (("Accept-Language", "ja-JP, en-US"), _MID),
        (("Content-Language", "en-US"), _MID),
        (("X-MS-Has-Attach", ""), _LOW),
        (("X-MS-TNEF-Correlator", ""), _LOW),
        *_tenant_stamps("orig", _EXO_SRC, "example.org"),
        (("Content-Type", 'text/plain; charset="us-ascii"'), _MUST),
        (("Content-Transfer-Encoding", "7bit"), _MUST),
        (("MIME-Version", "1.0"), _MUST),
    ]
    return _fit(fields, budget)


def _root_fields(budget: int) -> list[_Field]:
    """The NDR's header block as the sender's tenant delivered it, cut to about ``budget``
    bytes: its own Received chain and stamps on top of the signed fields contoso's tenant sent."""
    outbound_obe = "NAM04-DM6-obe.outbound.protection.outlook.com"
    frontend = "OS3PEPF0000A11B.jpnprd01.prod.outlook.com"
    delivered: list[tuple[_Field, int]] = [
        (
            (
                "Received",
                "from TYCP286CA0042.JPNP286.PROD.OUTLOOK.COM (2603:1096:400:2::11) by\n"
                f" {_EXO_SRC} with HTTPS; Tue, 3 Jun 2025 00:14:31 +0000",
            ),
            _MUST,
        ),
        (_received(frontend, "TYCP286CA0042.JPNP286.PROD.OUTLOOK.COM", "00:14:31"), _MUST),
        *[(f, _HIGH) for f in _auth_results("40.107.201.88", outbound_obe, "contoso.example")],
        (_received(outbound_obe, frontend, "00:14:31", " via Frontend Transport"), _HIGH),
    ]
    sent: list[tuple[_Field, int]] = [
        *[(f, _HIGH) for f in _arc("ndr", outbound_obe, "contoso.example")],
        (_dkim("contoso.example", "ndr"), _HIGH),
        (_received(_EXO_GEN, "CH0PR04CA0061.namprd04.prod.outlook.com", "00:14:30"), _HIGH),
        (_received("CH0PR04CA0061.namprd04.prod.outlook.com", outbound_obe, "00:14:30"), _HIGH),
    ]
    report_type = f'multipart/report; report-type=delivery-status;\n\tboundary="{_REPORT_BOUNDARY}"'
    ndr: list[_Field] = [
        ("From", "Microsoft Outlook <postmaster@contoso.example>"),
        ("To", f"<{_pos().SENDER}>"),
        ("Date", "Tue, 3 Jun 2025 00:14:30 +0000"),
        ("Content-Type", report_type),
        ("X-MS-Exchange-Message-Is-Ndr", ""),
        ("Content-Language", "en-US"),
        # The SEQ token where family() puts it: every copy sent is a distinct bounce.
        ("Message-ID", f"<{SEQ.decode()}-{_guid('ndr/id')}@{_EXO_GEN}>"),
        ("In-Reply-To", f"<{_ORIG_ID}>"),
        ("References", f"<{_ORIG_ID}>"),
        ("Thread-Topic", _EXO_SUBJECT),
        ("Thread-Index", _b64("thread-ndr", 27)),
        ("Subject", f"Undeliverable: {_EXO_SUBJECT}"),
        ("Auto-Submitted", "auto-replied"),
    ]
    receiving: list[_Field] = [
        ("Return-Path", "<>"),
        ("X-MS-Exchange-Organization-ExpirationStartTime", "03 Jun 2025 00:14:31.2094\n (UTC)"),
        ("X-MS-Exchange-Organization-ExpirationStartTimeReason", "OriginalSubmit"),
        ("X-MS-Exchange-Organization-ExpirationInterval", "1:00:00:00.0000000"),
        ("X-MS-Exchange-Organization-ExpirationIntervalReason", "OriginalSubmit"),
        ("X-MS-Exchange-Organization-Network-Message-Id", _guid("ndr-in/net")),
        ("X-EOPAttributedMessage", "0"),
        ("X-EOPTenantAttributedMessage", f"{_guid('example.org/tenant')}:0"),
        ("X-MS-Exchange-Organization-MessageDirectionality", "Incoming"),
        ("X-MS-Exchange-Transport-CrossTenantHeadersStripped", frontend),
        ("X-MS-Exchange-Organization-AuthSource", frontend),
        ("X-MS-Exchange-Organization-AuthAs", "Anonymous"),
        ("X-MS-Exchange-Organization-SCL", "1"),
        ("X-MS-Exchange-Transport-EndToEndLatency", "00:00:01.6914032"),
        ("X-MS-Exchange-Processed-By-BccFoldering", _EXO_BUILD),
        (
            "X-Microsoft-Antispam-Mailbox-Delivery",
            "ucf:0;jmr:0;auth:0;dest:I;ENG:(910005)(944506478)(944626604)(920097)\n"
            " (930097)(3100021)(140003)(1420198);",
        ),
        ("MIME-Version", "1.0"),
    ]
    fields = delivered + sent + [(f, _MUST) for f in ndr]
    fields += _tenant_stamps("ndr", _EXO_GEN, "contoso.example")
    fields += [(f, _MUST if f[0] in ("Return-Path", "MIME-Version") else _MID) for f in receiving]
    return _fit(fields, budget)


def _hop_rows(count: int) -> list[tuple[str, ...]]:
    """The last ``count`` hops as the NDR's "Message Hops" rows: hop, time, from, to, with, relay."""
    rows: list[tuple[str, ...]] = []
    for n, (when, frm, to, with_) in enumerate(_HOPS[-count:], 1):
        rows.append((str(n), f"6/3/2025 12:{when[3:]} AM", frm, to, with_, "*" if n == 1 else "0 sec"))
    return rows


def _exo_text(original_headers: str, hops: int) -> str:
    """Exchange Online's text/plain NDR for 5.7.133, the original headers at the end."""
    pos = _pos()
    group = _EXO_RCPT.split("@")[0]
    table = "\n".join("\t".join(row) for row in _hop_rows(hops))
    return (
        f"Your message to {_EXO_RCPT} couldn't be delivered.\n\n"
        f"{group} only accepts messages from people in its organization or on its allowed senders "
        "list, and your email address isn't on the list.\n\n"
        f"taro.yamada\tOffice 365\t{group}\nAction Required\t\tRecipient\n\n"
        f"{pos.SHORT[_EXO_CODE]}\n\n"
        "How to Fix It\n"
        "Ask the group's owner to accept messages from outside the organization, or to add you to "
        "the group's allowed senders. Resending the message won't help until then.\n\n"
        "More Info for Email Admins\n"
        f"Status code: 550 {_EXO_CODE}\n\n"
        "The group accepts mail only from authenticated senders (its own organization), so the "
        "delivery restriction check rejected this message from outside.\n\n"
        "Original Message Details\n"
        f"Created Date:\t6/3/2025 12:14:26 AM\nSender Address:\t{pos.SENDER}\n"
        f"Recipient Address:\t{_EXO_RCPT}\nSubject:\t{_EXO_SUBJECT}\n\n"
        "Error Details\n"
        f"Error:\t550 {_EXO_CODE} {pos.TOKEN[_EXO_CODE]}\n"
        f"Message rejected by:\t{_EXO_GEN}\n\n"
        "Notification Details\n"
        f"Sent by:\t{_EXO_GEN}\n\n"
        "Message Hops\n"
        f"HOP\tTIME (UTC)\tFROM\tTO\tWITH\tRELAY TIME\n{table}\n\n"
        f"Original Message Headers\n\n{original_headers}\n"
    )


def _html_escape(text: str) -> str:
    """HTML escaping as Exchange does it in NDRs (it escapes "+" too)."""
    return html.escape(text, quote=True).replace("+", "&#43;")


_EXO_STYLE = (
    "<style>\n"
    "body,td,th,p{font-family:'Segoe UI',Frutiger,Arial,sans-serif;font-size:14px;color:#000000}\n"
    ".h{font-size:17px;font-weight:600;margin:16px 0 6px 0}\n"
    ".e{font-size:20px;color:#C00000}\n.k{color:#666666;padding-right:10px}\n"
    ".hop td,.hop th{font-size:12px;text-align:left;padding:2px 8px 2px 0}\n"
    "pre{font-family:Consolas,monospace;font-size:12px;color:#212121}\n"
    "</style>\n"
)


def _html_table(rows: Sequence[tuple[str, ...]], cls: str = "", head: tuple[str, ...] = ()) -> str:
    """A table: with ``head``, a header row and plain cells, else key (class k) / value pairs."""
    lines = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"] if head else []
    for row in rows:
        cells = [f'<td class="k">{row[0]}</td>' if not head else f"<td>{row[0]}</td>"]
        lines.append("<tr>" + "".join(cells + [f"<td>{_html_escape(c)}</td>" for c in row[1:]]) + "</tr>")
    start = f'<table class="{cls}">' if cls else "<table>"
    return start + "\n" + "\n".join(lines) + "\n</table>\n"


def _exo_html(original_headers: str, hops: int) -> str:
    """Exchange Online's styled text/html NDR for 5.7.133, the original headers in a <pre>."""
    pos = _pos()
    group = _EXO_RCPT.split("@")[0]
    details = [("Created Date:", "6/3/2025 12:14:26 AM"), ("Sender Address:", pos.SENDER)]
    details += [("Recipient Address:", _EXO_RCPT), ("Subject:", _EXO_SUBJECT)]
    errors = [("Error:", f"550 {_EXO_CODE} {pos.TOKEN[_EXO_CODE]}"), ("Message rejected by:", _EXO_GEN)]
    hop_head = ("HOP", "TIME (UTC)", "FROM", "TO", "WITH", "RELAY TIME")
    return (
        '<html><head>\n<meta http-equiv="Content-Type" content="text/html; charset=us-ascii">\n'
        f"{_EXO_STYLE}</head>\n<body>\n"
        f'<p>Your message to <a href="mailto:{_EXO_RCPT}">{_EXO_RCPT}</a> couldn\'t be delivered.</p>\n'
        f"<p><b>{group}</b> only accepts messages from people in its organization or on its allowed "
        "senders list, and your email address isn't on the list.</p>\n"
        "<table><tr><td>taro.yamada</td><td>Office 365</td>"
        f'<td>{group}</td></tr>\n<tr><td><b style="color:#C00000">Action Required</b></td><td></td>'
        "<td>Recipient</td></tr></table>\n"
        f'<p class="e">{pos.SHORT[_EXO_CODE]}</p>\n'
        '<p class="h">How to Fix It</p>\n'
        "<p>Ask the group's owner to accept messages from outside the organization, or to add you "
        "to the group's allowed senders. Resending the message won't help until then.</p>\n"
        '<hr>\n<p class="h">More Info for Email Admins</p>\n'
        f"<p><i>Status code: 550 {_EXO_CODE}</i></p>\n"
        "<p>The group accepts mail only from authenticated senders (its own organization), so the "
        "delivery restriction check rejected this message from outside.</p>\n"
        '<p class="h">Original Message Details</p>\n'
        + _html_table(details)
        + '<p class="h">Error Details</p>\n'
        + _html_table(errors)
        + '<p class="h">Notification Details</p>\n'
        + _html_table([("Sent by:", _EXO_GEN)])
        + '<p class="h">Message Hops</p>\n'
        + _html_table(_hop_rows(hops), "hop", hop_head)
        + '<p class="h">Original Message Headers</p>\n'
        f"<pre>{_html_escape(original_headers)}</pre>\n</body>\n</html>\n"
    )


def _qp(text: str) -> str:
    """``positives.qp`` in us-ascii, a leading "." written =2E (no line starts with a dot)."""
    lines = _pos().qp(text, "us-ascii").split("\r\n")
    return "\r\n".join("=2E" + line[1:] if line.startswith(".") else line for line in lines)


_BODY_PARAGRAPHS = [
    "Below are the partner price points for the third quarter together with the revised order "
    "forms. The main change is the tiered discount for volume orders, which now starts at fifty "
    "units instead of one hundred, and the shorter payment window for first-time partners.",
    "Please check the figures for your region before Friday. If anything looks wrong, reply with "
    "the line number and the corrected value; I will collect the changes and send one consolidated "
    "version to the whole group early next week.",
    "The order forms have a new field for the partner's tax registration number. It is optional "
    "for now, but finance asked us to fill it in wherever we know it, because it saves a round "
    "trip when the invoice is issued.",
    "Shipping terms stay as they are, except for orders to remote islands, where the carrier "
    "surcharge is now shown as a separate line instead of being folded into the unit price.",
    "Two partners asked whether the new discount applies to orders placed before the change. It "
    "does not: the old tiers apply to everything confirmed before the first of the month.",
]
_SIGNATURE = "Thanks in advance,\n\nTaro Yamada\nPartner Sales, Example Org\n+81 3 5555 0123\n"


def _body(size: int) -> str:
    """A plain-text letter of about ``size`` bytes (whole numbered notes, wrapped at 72
    columns, between a greeting and a signature); CRLF line ends."""
    crlf: Callable[[str], str] = _pos().crlf
    notes: list[str] = []
    used = len(crlf("Hello all,\n\n" + _SIGNATURE))
    for n in itertools.count(1):
        text = f"{n}. {_BODY_PARAGRAPHS[(n - 1) % len(_BODY_PARAGRAPHS)]}"
        note = crlf("\n".join(textwrap.wrap(text, 72, subsequent_indent="   ")) + "\n\n")
        if used + len(note) > size:
            return crlf("Hello all,\n\n") + "".join(notes) + crlf(_SIGNATURE)
        notes.append(note)
        used += len(note)
    raise AssertionError("unreachable")


def _delivery_status() -> str:
    pos = _pos()
    group = pos.status_group(_EXO_RCPT, _EXO_CODE, f"550 {_EXO_CODE} {pos.TOKEN[_EXO_CODE]}")
    fields: str = pos.crlf(
        f"Reporting-MTA: dns;{_EXO_GEN}\nReceived-From-MTA: dns;{_EXO_SRC}\n"
        f"Arrival-Date: Tue, 3 Jun 2025 00:14:29 +0000\n\n{group}X-Display-Name: Sales Team\n\n"
    )
    return "Content-Type: message/delivery-status\r\n\r\n" + fields


def _exo_ndr(root_budget: int, header_budget: int, body_size: int) -> bytes:
    """The NDR: root headers; report(alternative(text, html), delivery-status, rfc822)."""
    pos = _pos()
    original = _original_fields(header_budget)
    headers = _render(original)
    listed = headers.replace("\r\n", "\n")  # the human parts quote them (as text, then QP)
    hops = sum(name == "Received" for name, _ in original)
    text = pos.part("text/plain", _qp(_exo_text(listed, hops)), "quoted-printable", "us-ascii")
    html_ = pos.part("text/html", _qp(_exo_html(listed, hops)), "quoted-printable", "us-ascii")
    human = pos.multipart("alternative", _ALTERNATIVE_BOUNDARY, [text, html_], "; differences=Content-Type")
    returned = "Content-Type: message/rfc822\r\n\r\n" + headers + "\r\n" + _body(body_size)
    report: str = pos.multipart("report", _REPORT_BOUNDARY, [human, _delivery_status(), returned])
    return (_render(_root_fields(root_budget)) + "\r\n" + report.split("\r\n\r\n", 1)[1]).encode("ascii")


def exchange_online(size: int = 20 * KIB) -> bytes:
    """A realistic Exchange Online 5.7.133 NDR ("sender not authenticated for group") of about
    ``size`` bytes (within a few percent; the smallest it builds is about 12.5 KB), to
    sales-team@contoso.example.

    :func:`family` pads a positive of a few KB; the modern Office 365 NDRs of the public
    corpus (sisimai's lhost-office365-04 ... -13) are 10-46 KB, median about 40 KB, and the
    parser's cost follows their structure, so this models it: a root header block of 5-14 KB
    (about a third of ``size``: Received chain, ARC, DKIM, Authentication-Results, dozens of
    X-MS-Exchange-* / X-Microsoft-Antispam* / X-Forefront-* fields, many folded);
    multipart/report > multipart/alternative with Exchange's template as quoted-printable
    text/plain and styled text/html, both quoting the original message's headers (the HTML in a
    <pre>); message/delivery-status; the returned message as message/rfc822, an ordinary text
    message whose header block grows with ``size`` and whose body makes up the rest.

    The NDR's own Message-ID and its boundaries hold :data:`SEQ`, as in :func:`family`. CRLF line ends, 7-bit,
    lines under 998 octets. Everything is synthetic: .example and outlook.com-like hosts, hashed
    signatures, our own wording.
    """
    root_budget = min(14 * KIB, max(5 * KIB + 128, size * 32 // 100))
    # The original header block appears three times (text, html, returned message): it gets
    # 30% of what the smallest NDR leaves over; the returned message's body takes the rest.
    spare = size - len(_exo_ndr(root_budget, 0, 0))
    header_budget = min(6 * KIB, spare * 3 // 10)
    fixed = len(_fresh_boundaries(_exo_ndr(root_budget, header_budget, 0))) - len(_body(0))
    return _fresh_boundaries(_exo_ndr(root_budget, header_budget, size - fixed))


def write_for_smtp_source(path: Path, data: bytes) -> Path:
    """Write ``data`` for ``smtp-source -F``, which appends CRLF to each line it reads."""
    path.write_bytes(data.replace(SEQ, b"static").replace(b"\r\n", b"\n"))
    return path
