"""Every SMTP reply bouncegw writes itself, as named constants.

Replies that come from the next hop are relayed as the next hop wrote them
(``gateway.relay.Reply``); these are the ones bouncegw decides on its own.
Enhanced status codes follow RFC 3463; the choice of 4xx versus 5xx follows
the rule that only input which can never succeed gets a permanent reply.
"""

from __future__ import annotations

import re

from gateway.textsafe import printable

# -- session ----------------------------------------------------------------
#: RFC 5321 section 3.1: a server may answer the connection with 554 instead of 220.
CLIENT_NOT_ALLOWED = "554 5.7.1 Access denied: your address is not allowed to relay through this gateway"
TOO_MANY_SESSIONS = "421 4.3.2 Too many sessions, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
COMMAND_TIMEOUT = "421 4.4.2 Timeout waiting for data, closing connection"

# -- envelope -----------------------------------------------------------------
SYNTAX_MAIL = "501 5.5.4 Syntax: MAIL FROM:<address> [SP <parameters>]"
SYNTAX_RCPT = "501 5.5.4 Syntax: RCPT TO:<address> [SP <parameters>]"
BAD_ADDRESS = "553 5.1.3 Malformed address"
NESTED_MAIL = "503 5.5.1 Nested MAIL command"
NEED_MAIL = "503 5.5.1 Need MAIL command first"
NEED_RCPT = "503 5.5.1 Need RCPT command first"
#: RFC 5321 section 4.5.3.1.10: a "too many recipients" reply is 452, so the client retries the rest.
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
#: RFC 1870 section 6.1 / RFC 3463 X.3.4.
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
UNKNOWN_PARAMETER = "555 5.5.4 {keyword} parameter not recognized or not implemented"
BAD_PARAMETER = "501 5.5.4 Invalid {keyword} parameter"
SMTPUTF8_NOT_ALLOWED = "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter (RFC 6531)"

# -- command lines -------------------------------------------------------------
#: RFC 5321 section 4.5.3.1.4 (512 octets with CRLF; extensions raise it for MAIL and RCPT, see
#: ``gateway.envelope``). X.5.2 "syntax error" (RFC 3463); X.5.6 is registered for over-long
#: AUTH exchange lines only (RFC 4954 section 6), so it is not used here.
COMMAND_TOO_LONG = "500 5.5.2 Command line too long (RFC 5321 section 4.5.3.1.4)"

# -- data -----------------------------------------------------------------------
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
#: RFC 5321 section 4.5.3.1.6: a text line is at most 1000 octets including CRLF.
LINE_TOO_LONG = "500 5.5.2 Line too long (RFC 5321 section 4.5.3.1.6 allows 1000 octets)"
DATA_SYNTAX = "501 5.5.4 Syntax: DATA"
#: RFC 5321 section 6.3 (loop detection by counting Received: fields) and RFC 3463 X.4.6
#: (routing loop detected); permanent: the same message takes the same route again.
TOO_MANY_HOPS = "554 5.4.6 Routing loop detected: too many hops ({limit} Received: header fields or more)"
LOOP_DETECTED = "554 5.4.6 Routing loop detected: the message has already passed this gateway {passes} times"

# -- our own failures: always transient, never internals in the text --------
PROCESSING_FAILED = "451 4.3.0 Temporary processing error, try again later"
NEXT_HOP_UNREACHABLE = "451 4.4.1 Next hop not reachable, try again later"
NEXT_HOP_CONNECTION_LOST = "451 4.4.2 Connection to next hop lost, try again later"
NEXT_HOP_TLS_REQUIRED = "451 4.7.5 Next hop does not offer the required TLS, try again later"
NEXT_HOP_AUTH_FAILED = "451 4.7.0 Next hop refused our authentication, try again later"
STORAGE_UNAVAILABLE = "451 4.3.0 Cannot record this bounce right now, try again later"

#: aiosmtpd's own wording for conditions that have a constant here.
LIBRARY_REPLIES: dict[str, str] = {
    "500 Command line too long": COMMAND_TOO_LONG,
}

#: Longest piece of client text quoted in a reply.
CLIENT_TEXT_MAX = 40
#: RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
REPLY_LINE_MAX = 510


def client_text(text: str) -> str:
    """Client input to quote in a reply: printable ASCII, control bytes escaped, bounded."""
    return printable(text, ascii_only=True, limit=CLIENT_TEXT_MAX)


def safe_reply(reply: str) -> str:
    """Printable ASCII lines of at most 510 octets (512 with CRLF).

    Whatever a reply quotes (the client's input echoed by aiosmtpd, a next hop's text) cannot
    reach the client's log or terminal as control bytes, nor split into extra reply lines.
    """
    if reply.isascii() and reply.isprintable() and len(reply) <= REPLY_LINE_MAX:
        return reply  # the common case: one clean line
    lines = reply.split("\r\n")
    return "\r\n".join(printable(line, ascii_only=True, limit=REPLY_LINE_MAX) for line in lines)


def final_reply(reply: str, *, enhanced: bool) -> str:
    """What is written for ``reply``: our wording, the enhanced code when due, then made safe."""
    reply = LIBRARY_REPLIES.get(reply, reply)
    if enhanced:
        reply = with_enhanced_code(reply)
    return safe_reply(reply)


#: Default enhanced codes for replies that reach the client without one, by reply
#: code (RFC 2034 section 3: once ENHANCEDSTATUSCODES is advertised, every 2xx,
#: 4xx and 5xx reply except the greeting and the EHLO reply carries one).
DEFAULT_ENHANCED: dict[int, str] = {
    211: "2.0.0",
    214: "2.0.0",
    221: "2.0.0",
    235: "2.7.0",
    250: "2.0.0",
    251: "2.1.5",
    252: "2.5.0",
    421: "4.3.0",
    432: "4.7.12",
    450: "4.2.0",
    451: "4.3.0",
    452: "4.3.1",
    454: "4.7.0",
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    530: "5.7.0",
    534: "5.7.9",
    535: "5.7.8",
    538: "5.7.11",
    550: "5.0.0",
    551: "5.1.6",
    552: "5.3.4",
    553: "5.1.3",
    554: "5.0.0",
    555: "5.5.4",
}

_REPLY = re.compile(r"^([245]\d\d)([ -])(?!\d\.\d{1,3}\.\d{1,3}\b)(.*)$", re.DOTALL)


def with_enhanced_code(reply: str) -> str:
    """Add the default enhanced status code to each line of a reply that lacks one."""
    lines = reply.split("\r\n")
    out = []
    for line in lines:
        match = _REPLY.match(line)
        if match is None:
            out.append(line)
            continue
        code = int(match.group(1))
        enhanced = DEFAULT_ENHANCED.get(code, f"{match.group(1)[0]}.0.0")
        out.append(f"{match.group(1)}{match.group(2)}{enhanced} {match.group(3)}".rstrip())
    return "\r\n".join(out)
