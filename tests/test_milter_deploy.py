"""deploy/sendmail/bouncegw.mc, as shipped, through Sendmail's own m4 macros.

Sendmail itself is not installed next to Postfix, but its configuration is built by m4 from
the cf macros (Debian package sendmail-cf): the snippet must produce the milter definition
(the ``X`` line) and the filter list (``O InputMailFilters``) that point at the socket
``bouncegw milter`` listens on by default.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from gateway.milter.service import DEFAULT_LISTEN, Address
from gateway.milter.session import END_OF_MESSAGE_BUDGET
from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]
SNIPPET = REPO / "deploy" / "sendmail" / "bouncegw.mc"
CF_M4 = Path("/usr/share/sendmail/cf/m4/cf.m4")


def sendmail_cf(tmp_path: Path) -> str:
    m4 = shutil.which("m4")
    need(
        m4 is not None and CF_M4.exists(),
        "m4 and Sendmail's cf macros are needed (apt-get install sendmail-cf)",
    )
    assert m4 is not None
    mc = tmp_path / "sendmail.mc"
    # The smallest sendmail.mc around the snippet, as a site's own would be.
    mc.write_text(
        f"divert(-1)\ninclude(`{CF_M4}')\ndivert(0)dnl\nOSTYPE(`linux')dnl\n"
        + SNIPPET.read_text()
        + "MAILER(`smtp')dnl\n"
    )
    done = subprocess.run([m4, str(mc)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def seconds(spec: str) -> float:
    """A Sendmail time value (``30s``, ``5m``, ``1h``) in seconds."""
    return float(spec[:-1]) * {"s": 1, "m": 60, "h": 3600}[spec[-1]]


def test_the_sendmail_snippet_defines_the_milter_on_bouncegw_s_socket(tmp_path: Path) -> None:
    cf = sendmail_cf(tmp_path)
    [definition] = [line for line in cf.splitlines() if line.startswith("Xbouncegw,")]
    fields = dict(part.strip().split("=", 1) for part in definition.split(",")[1:])
    # Sendmail writes inet:PORT@HOST; bouncegw's --listen is Postfix's inet:HOST:PORT.
    port, host = fields["S"].removeprefix("inet:").split("@")
    default = Address.parse(DEFAULT_LISTEN)
    assert (host, int(port)) == (default.host, default.port)
    # F= empty: with bouncegw down Sendmail passes mail on, as milter_default_action = accept.
    assert fields["F"] == ""
    timeouts = {key: seconds(value) for key, value in (item.split(":") for item in fields["T"].split(";"))}
    # Sendmail waits longer for a reply (R) and for the end of the message (E) than bouncegw
    # takes at most to answer it.
    assert min(timeouts["R"], timeouts["E"]) > END_OF_MESSAGE_BUDGET
    assert "O InputMailFilters=bouncegw" in cf.splitlines()
