"""A private Postfix with the shipped ``deploy/postfix/`` files, and a small fake internet around it.

What comes from the repository, as it is (only the ports 10025/10026/8025 and the paths of
bouncegw's state are substituted): the placement's ``*.main.cf`` and ``*.master.cf``, and
``bouncegw.toml``. What the lab adds stands for the world or for the site, never for the placement:

- the world: servers on other loopback addresses that all listen on one port (the "SMTP port" of
  this world, ``smtp_tcp_port``), and a hosts file in Postfix's chroot (the shipped transports run
  chrooted, as Debian's do) that stands for DNS: ``example.com`` (the users' mailbox server),
  ``contoso-exo.test`` (an Exchange Online tenant that refuses with ``550 5.7.133``) and
  ``fabrikam.test`` (a server that accepts everything);
- the site: a Postfix with no local mailboxes whose SMTP client is ``127.0.0.1`` (``mynetworks``);
  for placements on the MX, ``relay_domains = example.com`` so mail from outside is accepted.

Postfix runs as a private instance (``postfix -c DIR start``, root needed) with its queue and its
log (``maillog_file``) in DIR.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import need
from tests.explain_checks import delivery_status_fields
from tests.processes import free_port, wait_for_smtp, wait_until
from tests.recording_server import Received, RecordingServer

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "deploy" / "postfix"
POSTFIX = shutil.which("postfix") or "/usr/sbin/postfix"
POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"

USERS_DOMAIN = "example.com"
SENDER = f"alice@{USERS_DOMAIN}"
#: Exchange Online's answer when a group accepts mail only from authenticated senders.
REJECTION = (
    "550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication required; "
    "Delivery restriction check failed because the sender was not authenticated when "
    "sending to this group"
)
GROUP = "all-staff@contoso-exo.test"
#: The world's servers, by domain ("DNS" is the hosts file in Postfix's chroot).
WORLD = {USERS_DOMAIN: "127.0.0.2", "contoso-exo.test": "127.0.0.3", "fabrikam.test": "127.0.0.4"}
#: Where mail "from outside" comes from: not in the site's mynetworks.
OUTSIDE = "127.0.0.5"
#: Upper bound for Postfix to deliver and bounce; the tests wait for events, not for time.
DEADLINE = 120.0
#: The comment that marks bouncegw's own Received: trace (gateway.loops.MARK).
GATEWAY_TRACE = b"(bouncegw)"


@dataclass(frozen=True)
class Placement:
    main_cf: str
    master_cf: str | None
    #: bouncegw's next hop: Postfix's re-injection listener, or the users' mailbox server.
    next_hop: str  # "reinject" | "mailbox"
    #: Whether the placement is on the users' MX (mail from outside is accepted for example.com).
    mx: bool
    #: Milter mode: ``bouncegw milter`` instead of ``bouncegw serve``, and the site also has
    #: local (virtual) mailboxes in LOCAL_DOMAIN, whose DSNs never cross SMTP.
    milter: bool = False


PLACEMENTS = {
    "relayhost": Placement("relayhost.main.cf", "relayhost.master.cf", "reinject", mx=False),
    "null-sender": Placement("null-sender.main.cf", "relayhost.master.cf", "reinject", mx=False),
    "users-domains": Placement("users-domains.main.cf", None, "mailbox", mx=True),
    "content-filter": Placement("content-filter.main.cf", "content-filter.master.cf", "reinject", mx=True),
    "milter": Placement("milter.main.cf", None, "none", mx=True, milter=True),
}
#: Milter mode's local mailboxes: Postfix's virtual delivery agent into Maildirs under the lab.
LOCAL_DOMAIN = "local.test"
LOCAL_USER = f"bob@{LOCAL_DOMAIN}"

#: master.cf for the private instance: Debian's services. Chroot "n" for the daemons that would
#: need files copied into the queue directory; the SMTP clients run chrooted as in Debian's
#: master.cf, so that the hosts file in the chroot is their "DNS".
BASE_MASTER_CF = """\
{smtpd_listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def site_main_cf(directory: Path, world_port: int, *, mx: bool) -> str:
    return textwrap.dedent(f"""\
        compatibility_level = 3.6
        queue_directory = {directory}/queue
        data_directory = {directory}/data
        # Without a terminal or syslog, start errors are seen only in this file.
        maillog_file = {directory}/maillog
        maillog_file_prefixes = {directory}
        # The site: no local mailboxes; its users submit from 127.0.0.1.
        myhostname = mta.{USERS_DOMAIN}
        mydomain = {USERS_DOMAIN}
        myorigin = {USERS_DOMAIN}
        mydestination =
        local_recipient_maps =
        alias_maps =
        alias_database =
        inet_interfaces = loopback-only
        inet_protocols = ipv4
        mynetworks = 127.0.0.1/32
        smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
        {"relay_domains = " + USERS_DOMAIN if mx else "relay_domains ="}
        # The world: no DNS (the chroot's hosts file instead), SMTP on one port of its own.
        disable_dns_lookups = yes
        smtp_host_lookup = native
        smtp_tcp_port = {world_port}
        smtp_tls_security_level = none
        smtpd_tls_security_level = none
        """)


def local_mailboxes_cf(directory: Path) -> str:
    """The site's local mailboxes (milter mode): one Maildir for LOCAL_USER, owned by nobody."""
    return textwrap.dedent(f"""\
        virtual_mailbox_domains = {LOCAL_DOMAIN}
        virtual_mailbox_base = {directory}/mail
        virtual_mailbox_maps = inline:{{ {LOCAL_USER}=bob/ }}
        virtual_uid_maps = static:65534
        virtual_gid_maps = static:65534
        """)


def shipped(name: str, ports: dict[str, str]) -> str:
    text = (SHIPPED / name).read_text()
    for old, new in ports.items():
        text = text.replace(old, new)
    return text


@dataclass
class Lab:
    placement: Placement
    root: Path  # Postfix's instance directory
    state: Path  # bouncegw's working directory
    postfix_port: int
    admin_port: int
    database_url: str
    servers: dict[str, RecordingServer]
    sent: int = 0
    logs: list[str] = field(default_factory=list)
    gateway: asyncio.subprocess.Process | None = None

    def local_mailbox(self) -> list[bytes]:
        """The messages delivered to LOCAL_USER's Maildir (milter mode), oldest first."""
        new = self.root / "mail" / "bob" / "new"
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime) if new.exists() else []
        return [f.read_bytes() for f in files]

    async def stop_gateway(self) -> None:
        """Stop bouncegw (SIGTERM) and wait for it; Postfix goes on running."""
        assert self.gateway is not None and self.gateway.returncode is None
        self.gateway.terminate()
        await asyncio.wait_for(self.gateway.wait(), 60)

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    def maillog(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else "(no maillog)"

    def messages(self, domain: str) -> list[Received]:
        return self.servers[domain].messages

    async def wait_for_messages(self, domain: str, count: int) -> list[Received]:
        try:
            await wait_until(lambda: len(self.messages(domain)) >= count, f"{count} at {domain}", DEADLINE)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.maillog()}") from None
        return self.messages(domain)

    async def wait_for_empty_queue(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while loop.time() < end:
            listing = await asyncio.to_thread(
                subprocess.run,
                [POSTQUEUE, "-c", str(self.config_dir), "-j"],
                capture_output=True,
                text=True,
                check=True,
            )
            if not listing.stdout.strip():  # one JSON object per queued message
                return
            await asyncio.sleep(0.2)
        raise AssertionError("Postfix's queue did not drain\n" + self.maillog())

    def flush(self) -> None:
        """``postqueue -f``: deliver what is deferred now, not at the next queue run."""
        subprocess.run([POSTQUEUE, "-c", str(self.config_dir), "-f"], capture_output=True, check=True)

    def submit(self, sender: str, recipients: list[str], message: bytes, *, outside: bool = False) -> None:
        """One SMTP transaction to Postfix's public listener, from a user or from outside."""
        source = (OUTSIDE, 0) if outside else None
        with smtplib.SMTP("127.0.0.1", self.postfix_port, timeout=60, source_address=source) as smtp:
            assert smtp.sendmail(sender, recipients, message) == {}

    def incidents(self) -> list[dict[str, object]]:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "incidents", "list", "--format", "json",
             "--database", self.database_url],
            capture_output=True, text=True, cwd=self.state,
            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
        )  # fmt: skip
        rows: list[dict[str, object]] = json.loads(done.stdout)
        return rows

    def metric(self, name: str, **labels: str) -> float:
        """One sample from bouncegw's /metrics (0 when the series is absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=30) as response:
            text = response.read().decode()
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


def untraced(data: bytes) -> bytes:
    """The message without the Received: fields MTAs put on top of it (RFC 5321 section 4.4)."""
    while data[:9].lower() == b"received:":
        end = data.index(b"\r\n", 9)
        while data[end + 2 : end + 3] in (b" ", b"\t"):
            end = data.index(b"\r\n", end + 2)
        data = data[end + 2 :]
    return data


def gateway_traces(data: bytes) -> int:
    """How many times the message crossed bouncegw (its Received: traces in the header block)."""
    header = data.split(b"\r\n\r\n", 1)[0]
    return header.count(GATEWAY_TRACE)


async def _world(port: int) -> dict[str, RecordingServer]:
    servers: dict[str, RecordingServer] = {}
    try:
        for domain, host in WORLD.items():
            server = RecordingServer(host=host, port=port)
            if domain == "contoso-exo.test":
                server.replies["RCPT"] = lambda arg: REJECTION
            await server.start()
            servers[domain] = server
            port = server.port
    except BaseException:
        for server in servers.values():
            await server.stop()
        raise
    return servers


async def wait_for_listener(port: int, process: asyncio.subprocess.Process, log: Path) -> None:
    """Until something accepts TCP connections on ``port`` (the milter sends no greeting)."""
    for _ in range(600):
        if process.returncode is not None:
            raise AssertionError(f"bouncegw exited with {process.returncode}: {log.read_text()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise AssertionError(f"nothing listens on {port}: {log.read_text()}")


def stop_postfix(config_dir: Path) -> None:
    """``postfix stop`` only signals the master: wait until ``postfix status`` says it has gone."""
    subprocess.run([POSTFIX, "-c", str(config_dir), "stop"], capture_output=True)
    for _ in range(600):
        if subprocess.run([POSTFIX, "-c", str(config_dir), "status"], capture_output=True).returncode:
            return
        time.sleep(0.1)
    subprocess.run([POSTFIX, "-c", str(config_dir), "abort"], capture_output=True)


def write_world_dns(queue: Path) -> None:
    """The chroot's hosts file: the world's "DNS" (written after start: Debian's start script
    copies the machine's own /etc files into the chroot)."""
    etc = queue / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "hosts").write_text("".join(f"{host} {domain}\n" for domain, host in WORLD.items()))
    (etc / "nsswitch.conf").write_text("hosts: files\n")


@asynccontextmanager
async def postfix_lab(
    tmp_path: Path,
    name: str,
    *,
    edit_master_cf: tuple[str, str] | None = None,
    gateway_env: dict[str, str] | None = None,
) -> AsyncIterator[Lab]:
    """The placement ``name`` running: Postfix, ``bouncegw serve`` (milter mode: ``bouncegw
    milter``) and the world.

    ``edit_master_cf`` (old, new) alters the shipped master.cf: only for the test that builds a
    deliberately broken configuration. ``gateway_env`` adds settings for bouncegw
    (``BOUNCEGW_<SECTION>__<KEY>``): only for tests that break its storage on purpose.
    """
    need(Path(POSTFIX).exists(), "Postfix is not installed (apt-get install postfix)")
    need(os.geteuid() == 0, "a private Postfix instance must be started as root")
    placement = PLACEMENTS[name]
    servers: dict[str, RecordingServer] = {}
    for _ in range(5):  # another process may hold the port on one of the addresses
        try:
            servers = await _world(0)
            break
        except OSError:
            continue
    assert servers, "could not find a port free on every address of the world"
    world_port = servers[USERS_DOMAIN].port
    gateway_port, reinject_port, postfix_port, admin_port = (free_port() for _ in range(4))
    ports = {"10025": str(gateway_port), "10026": str(reinject_port), "10030": str(gateway_port)}
    # Postfix's daemons run as "postfix" and must reach the queue: pytest's own temporary root is
    # private to root (0700), so the instance lives in a directory of its own, removed afterwards.
    root = Path(tempfile.mkdtemp(prefix="bouncegw-postfix-"))
    root.chmod(0o711)
    config_dir = root / "etc"
    config_dir.mkdir()
    # postfix-script creates the queue's subdirectories (with their owners), not the top ones.
    (root / "queue").mkdir()
    (root / "data").mkdir()
    shutil.chown(root / "data", "postfix")  # master.lock and the caches belong to mail_owner
    main_cf = site_main_cf(root, world_port, mx=placement.mx)
    if placement.milter:
        main_cf += local_mailboxes_cf(root)
        (root / "mail").mkdir()
        shutil.chown(root / "mail", "nobody", "nogroup")
    main_cf += f"\n# ---- {placement.main_cf}, as shipped ----\n" + shipped(placement.main_cf, ports)
    master_cf = BASE_MASTER_CF.format(smtpd_listen=f"127.0.0.1:{postfix_port}")
    if placement.milter:
        master_cf += "virtual   unix  -       n       n       -       -       virtual\n"
    if placement.master_cf:
        extra = shipped(placement.master_cf, ports)
        if edit_master_cf is not None:
            assert edit_master_cf[0] in extra
            extra = extra.replace(*edit_master_cf)
        master_cf += f"\n# ---- {placement.master_cf}, as shipped ----\n" + extra
    (config_dir / "main.cf").write_text(main_cf)
    (config_dir / "master.cf").write_text(master_cf)
    # bouncegw.toml as shipped: ports and state paths substituted, and for placement 2 the next
    # hop is the mailbox server, as users-domains.main.cf says.
    next_hop = (
        f"127.0.0.1:{reinject_port}" if placement.next_hop == "reinject" else servers[USERS_DOMAIN].address
    )
    database_url = f"sqlite:///{tmp_path / 'incidents.sqlite3'}"
    toml = shipped(
        "bouncegw.toml",
        {
            "127.0.0.1:10025": f"127.0.0.1:{gateway_port}",
            "127.0.0.1:10026": next_hop,
            "127.0.0.1:8025": f"127.0.0.1:{admin_port}",
            "sqlite:////var/lib/bouncegw/bouncegw.sqlite3": database_url,
            "/var/lib/bouncegw/journal": str(tmp_path / "journal"),
        },
    )
    assert "/var/lib" not in toml and "10025" not in toml, toml
    (tmp_path / "bouncegw.toml").write_text(toml)
    gateway_log = (tmp_path / "bouncegw.log").open("wb")
    gateway = None
    postfix_started = False
    command = (
        ["milter", "--listen", f"inet:127.0.0.1:{gateway_port}"]
        if placement.milter
        else ["serve", "--workers", "1"]
    )
    try:
        gateway = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", *command,
            "--config", str(tmp_path / "bouncegw.toml"),
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), **(gateway_env or {})},
            stdout=asyncio.subprocess.DEVNULL, stderr=gateway_log,
        )  # fmt: skip
        if placement.milter:
            await wait_for_listener(gateway_port, gateway, tmp_path / "bouncegw.log")
        else:
            await wait_for_smtp(gateway_port, gateway)
        started = await asyncio.to_thread(
            subprocess.run, [POSTFIX, "-c", str(config_dir), "start"], capture_output=True, text=True
        )
        postfix_started = True
        maillog = root / "maillog"
        assert started.returncode == 0, started.stderr + (maillog.read_text() if maillog.exists() else "")
        write_world_dns(root / "queue")
        await wait_for_smtp(postfix_port)
        yield Lab(placement, root, tmp_path, postfix_port, admin_port, database_url, servers, gateway=gateway)
    finally:
        if postfix_started:
            await asyncio.to_thread(stop_postfix, config_dir)
        if gateway is not None and gateway.returncode is None:
            gateway.terminate()
            try:
                await asyncio.wait_for(gateway.wait(), 30)
            except TimeoutError:
                gateway.kill()
                await gateway.wait()
        gateway_log.close()
        for server in servers.values():
            await server.stop()
        shutil.rmtree(root, ignore_errors=True)


def postfix_dsn_fields(data: bytes, recipient: str) -> dict[str, str]:
    """Check a DSN written by Postfix's bounce daemon kept its own field set; its recipient's fields.

    RFC 3464 sections 2.2 and 2.3, plus Postfix's X-Postfix-* ones, in Postfix's order.
    """
    [per_message, per_recipient] = delivery_status_fields(data)
    assert [k for k, _ in per_message] == [
        "Reporting-MTA",
        "X-Postfix-Queue-ID",
        "X-Postfix-Sender",
        "Arrival-Date",
    ]
    assert [k for k, _ in per_recipient] == [
        "Final-Recipient", "Original-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
    ]  # fmt: skip
    fields = dict(per_recipient)
    assert fields["Final-Recipient"].lower().replace(" ", "") == f"rfc822;{recipient}"
    return fields
