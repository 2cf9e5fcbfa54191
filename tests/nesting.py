"""Deeply nested MIME messages (the nesting attack of the abuse suite) built from a family bounce."""

from __future__ import annotations

from tests.positives import exo_ndr

LEAF = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nthe innermost part\r\n"
DEEP_RECIPIENT = "sales-team@contoso.example"


def nested(levels: int, leaf: bytes = LEAF) -> bytes:
    """``levels`` multipart/mixed parts, each the only part of the one around it, ``leaf`` innermost."""
    out = leaf
    for level in range(levels, 0, -1):
        b = f"deep{level}".encode()
        out = (
            b'Content-Type: multipart/mixed; boundary="'
            + b
            + b'"\r\n\r\n--'
            + b
            + b"\r\n"
            + out
            + b"\r\n--"
            + b
            + b"--\r\n"
        )
    return out


def deep_bounce(levels: int) -> bytes:
    """An Exchange Online 5.7.133 NDR with one more report part nested ``levels`` deep.

    Its human part, delivery-status part and returned headers sit at the top, above any depth cap.
    """
    ndr = exo_ndr(DEEP_RECIPIENT, "5.7.133")
    close = b"\r\n--rep-b1--"
    head, _, tail = ndr.rpartition(close)
    return head + b"\r\n--rep-b1\r\n" + nested(levels) + close + tail


def buried_bounce(levels: int) -> bytes:
    """A bounce whose whole report sits ``levels`` deep: nothing machine-readable above the cap."""
    ndr = exo_ndr(DEEP_RECIPIENT, "5.7.133")
    header, _, body = ndr.partition(b"\r\n\r\n")
    root = [line for line in header.split(b"\r\n") if not line.lower().startswith(b"content-type:")]
    report_part = b'Content-Type: multipart/report; report-type=delivery-status; boundary="rep-b1"\r\n\r\n'
    inner = report_part + body
    wrapper = nested(levels, inner)
    wrapper_ct, _, wrapper_body = wrapper.partition(b"\r\n\r\n")
    return b"\r\n".join(root) + b"\r\n" + wrapper_ct + b"\r\n\r\n" + wrapper_body
