"""A parsed MIME tree as a flat, comparable list (for comparing the parser's paths)."""

from __future__ import annotations

from gateway.bounce import mime

Flat = list[tuple[int, str, tuple[tuple[str, str], ...], str, int | None, int | None, int | None]]


def flat(node: mime.Node, depth: int = 0) -> Flat:
    unread_end = (depth == 0 and node.ctype.startswith("multipart/")) or node.ctype.startswith("message/")
    row = (
        depth,
        node.ctype,
        tuple(sorted(node.params.items())),
        node.cte,
        node.headers_start,
        node.body_start,
        None if unread_end else node.body_end,
    )
    return [row] + [r for child in node.children for r in flat(child, depth + 1)]
