"""The deployment is hardened as docs/deployment.md says (issue 13, found 8): TLS 1.2+ only,
HSTS, rate and connection limits, the credential passed through to the service; the container
runs unprivileged and is published on loopback; the unit drops privileges. With nginx on the
machine, ``nginx -t`` checks the site for real."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SITE = DEPLOY / "nginx" / "atomlab-swarm.conf"


@dataclass
class Block:
    """One nginx context: its directives (name -> list of argument lists) and child blocks."""

    name: str
    args: list[str]
    directives: dict[str, list[list[str]]] = field(default_factory=dict)
    children: list[Block] = field(default_factory=list)

    def all(self, name: str) -> list[list[str]]:
        return self.directives.get(name, [])

    def one(self, name: str) -> list[str]:
        [found] = self.all(name)
        return found

    def blocks(self, name: str) -> list[Block]:
        return [child for child in self.children if child.name == name]


def parse_nginx(text: str) -> Block:
    """A small, strict reader of nginx's syntax: words, quoted strings, ``;``, ``{``, ``}``."""
    tokens = re.findall(
        r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[{};]|[^\s{};"\']+', re.sub(r"#[^\n]*", "", text)
    )
    root = Block("main", [])
    stack = [root]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            name, *args = words
            stack[-1].directives.setdefault(name, []).append(args)
            words = []
        elif token == "{":
            name, *args = words
            child = Block(name, args)
            stack[-1].children.append(child)
            stack.append(child)
            words = []
        elif token == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(token.strip("\"'"))
    assert len(stack) == 1 and not words, "unbalanced braces"
    return root


@pytest.fixture(scope="module")
def site() -> Block:
    return parse_nginx(SITE.read_text())


def _tls_server(site: Block) -> Block:
    [server] = [s for s in site.blocks("server") if any("ssl" in a for a in s.all("listen"))]
    return server


def test_tls_is_1_2_or_newer_with_hsts(site: Block) -> None:
    server = _tls_server(site)
    assert server.one("ssl_protocols") == ["TLSv1.2", "TLSv1.3"]
    headers = {args[0]: args[1:] for args in server.all("add_header")}
    hsts = headers["Strict-Transport-Security"]
    assert hsts[-1] == "always"
    assert int(re.search(r"max-age=(\d+)", hsts[0]).group(1)) >= 31_536_000  # type: ignore[union-attr]
    assert headers["X-Content-Type-Options"][0] == "nosniff"
    assert server.one("server_tokens") == ["off"]
    assert server.one("ssl_session_tickets") == ["off"]
    # Plain HTTP only redirects.
    [plain] = [s for s in site.blocks("server") if s is not server]
    assert plain.one("return")[0] == "301"


def test_requests_and_connections_are_rate_limited(site: Block) -> None:
    zones = {args[1].split("=")[1].split(":")[0] for args in site.all("limit_req_zone")}
    assert {"atomlab_swarm_api", "atomlab_swarm_write"} <= zones
    server = _tls_server(site)
    [api] = [b for b in server.blocks("location") if b.args == ["/"]]
    limited = {args[0].split("=")[1] for args in api.all("limit_req")}
    assert limited == {"atomlab_swarm_api", "atomlab_swarm_write"}
    assert api.all("limit_conn")
    [link] = [b for b in server.blocks("location") if b.args == ["/ws/isaac"]]
    assert link.all("limit_conn")
    assert server.one("limit_req_status") == ["429"]
    assert server.one("client_max_body_size") == ["2m"]
    assert server.all("client_body_timeout") and server.all("client_header_timeout")


def test_the_credential_reaches_the_service_on_every_proxied_location(site: Block) -> None:
    server = _tls_server(site)
    for location in server.blocks("location"):
        if location.all("proxy_pass"):
            headers = {args[0]: args[1] for args in location.all("proxy_set_header")}
            assert headers.get("Authorization") == "$http_authorization", location.args


def test_metrics_stay_on_the_lab_network(site: Block) -> None:
    [metrics] = [b for b in _tls_server(site).blocks("location") if b.args == ["/metrics"]]
    assert metrics.all("deny") == [["all"]]
    assert ["0.0.0.0/0"] not in metrics.all("allow")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here")
def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    """``nginx -t`` on the site inside a minimal nginx.conf, with a throw-away certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed here")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=swarm.lab.example",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    text = SITE.read_text().replace("/etc/ssl/certs/swarm.lab.example.pem", str(cert))
    text = text.replace("/etc/ssl/private/swarm.lab.example.key", str(key))
    (tmp_path / "site.conf").write_text(text)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{ access_log off; include {tmp_path}/site.conf; }}\n"
    )
    result = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def _containerfile() -> str:
    return (DEPLOY / "container" / "Containerfile").read_text()


def test_the_container_runs_unprivileged_without_dev_tools() -> None:
    text = _containerfile()
    [user] = re.findall(r"^USER (\S+)$", text, re.M)
    assert user.split(":")[0] not in ("root", "0")
    assert user.split(":")[0].isdigit()  # numeric: works with runAsNonRoot checks
    assert "--no-dev" in text
    assert re.search(r"^HEALTHCHECK ", text, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", text, re.M)


def test_the_documented_container_run_publishes_on_loopback_read_only() -> None:
    guide = (DOCS / "deployment.md").read_text()
    runs = [line for line in guide.splitlines() if "run -d" in line]
    assert runs, "docs/deployment.md shows how to run the container"
    for command in [_containerfile(), guide]:
        published = re.findall(r"-p (\S+):8000", command)
        assert published and all(p.startswith("127.0.0.1:") for p in published)
        assert "--read-only" in command and "--cap-drop=ALL" in command
        assert "no-new-privileges" in command


def test_the_unit_drops_every_privilege_it_does_not_need() -> None:
    unit = (DEPLOY / "systemd" / "atomlab-swarm.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["CapabilityBoundingSet"] == ""
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "RestrictSUIDSGID",
        "LockPersonality",
    ):
        assert settings[key] == "true", key
    assert settings["ProtectSystem"] == "strict"
    assert settings["UMask"] == "0077"  # the tokens file and the database stay private
    assert "--host 127.0.0.1" in settings["ExecStart"]
