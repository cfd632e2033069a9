"""SECURITY.md's role matrix is the route table: a route added, removed or given another role or audit
name without the document following fails here (the message shows the rows to paste)."""

from __future__ import annotations

from pathlib import Path

from secauto.api.roles import METRICS_ROLE, PUBLIC, declared_role
from secauto.api.routes import route_table
from secauto.api.spec import declared_operation

SECURITY_MD = Path(__file__).resolve().parents[2] / "SECURITY.md"
START, END = "<!-- role-matrix:start -->", "<!-- role-matrix:end -->"


def expected_rows() -> list[str]:
    rows = []
    for method, path, handler in route_table():
        op, role = declared_operation(handler), declared_role(handler)
        assert op is not None and role is not None
        shown_role = {PUBLIC: "none", METRICS_ROLE: "viewer (none with `metrics.public`)"}.get(role, role)
        if method in ("GET", "HEAD"):
            action = "-"
        elif op.audit is False:
            action = "- (changes nothing)"
        else:
            action = f"`{op.audit}`" if isinstance(op.audit, str) else f"`{method} {path}`"
        rows.append(f"| `{method} {path}` | {shown_role} | {action} |")
    return rows


def test_the_role_matrix_matches_the_route_table() -> None:
    text = SECURITY_MD.read_text(encoding="utf-8")
    assert START in text and END in text, f"SECURITY.md lacks the {START} ... {END} block"
    block = text.split(START, 1)[1].split(END, 1)[0]
    documented = [line.strip() for line in block.splitlines() if line.startswith("| `")]
    expected = expected_rows()
    assert documented == expected, "SECURITY.md's role matrix is out of date; its rows should be:\n" + "\n".join(
        expected)
