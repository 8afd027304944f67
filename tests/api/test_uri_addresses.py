"""Outbound http(s) dataset URIs (tasks.artifacts.uris): refused addresses are refused before any
connection, allowed hosts are fetched from the address that was checked, redirects are checked.

Nothing here leaves this machine: every test runs with a fake resolver (names map to addresses
listed here; numeric hosts are parsed, never looked up) and a connection guard that lets
sockets connect to loopback (127.0.0.1, ::1) only and records every attempt. Servers listen
on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tasks.artifacts import uris
from tasks.artifacts.uris import UriRejected, address_class, check_uri, open_uri, resolve_checked
from tasks.settings import Settings
from tests.api.checks import assert_problem

BODY = b"0123456789" * 10


class Net:
    """The fake resolver's names and what the guard saw."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []


@pytest.fixture
def net(monkeypatch: pytest.MonkeyPatch) -> Net:
    state = Net()
    real_getaddrinfo = socket.getaddrinfo
    real_create_connection = socket.create_connection

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        host = host.decode() if isinstance(host, bytes) else host
        try:  # a numeric host is parsed, never looked up
            return real_getaddrinfo(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            if flags & socket.AI_NUMERICHOST:  # the caller asked for no lookup
                raise
        state.lookups.append(host)
        if host not in state.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out = []
        for addr in state.names[host]:
            ip = ipaddress.ip_address(addr)
            fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            sockaddr = (addr, port or 0) if ip.version == 4 else (addr, port or 0, 0, 0)
            out.append((fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    def create_connection(address, *args, **kwargs):
        host, port = address[0], address[1]
        state.connects.append((host, port))
        if host not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to connect to {host}:{port}")
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return state


class CountingServer(http.server.ThreadingHTTPServer):
    """Counts the connections it accepts, and records each request's path and Host."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.accepted = 0
        self.requests: list[tuple[str, str | None]] = []

    def get_request(self):
        conn = super().get_request()
        self.accepted += 1
        return conn


class Handler(http.server.BaseHTTPRequestHandler):
    server: CountingServer

    def do_GET(self) -> None:  # noqa: N802
        self.server.requests.append((self.path, self.headers.get("Host")))
        if self.path.startswith("/to/"):  # /to/<target>: a redirect to http://<target>
            self.send_response(302)
            self.send_header("Location", "http://" + self.path[len("/to/") :])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/loop.npz":
            self.send_response(302)
            self.send_header("Location", "/loop.npz")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/d.npz":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[CountingServer]:
    srv = CountingServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _settings(tmp_path: Path, **kw) -> Settings:
    kw.setdefault("uri_schemes", ["http", "https"])
    return Settings(data_dir=tmp_path / "var", **kw)


REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("2130706433", "loopback"),
    ("0x7f.1", "loopback"),
    ("[::1]", "loopback"),
    ("localhost", "loopback"),
    ("api.localhost", "loopback"),
    ("169.254.169.254", "link-local"),
    ("[fe80::1]", "link-local"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("[fc00::1]", "private"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"),
    ("[::]", "unspecified"),
    ("100.64.0.1", "not globally routable"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
    ("[::ffff:169.254.169.254]", "IPv4-mapped link-local"),
    ("[::ffff:10.0.0.1]", "IPv4-mapped private"),
    ("[64:ff9b::a9fe:a9fe]", "link-local"),  # NAT64 of 169.254.169.254
    ("[2002:7f00:1::]", "loopback"),  # 6to4 of 127.0.0.1
]


@pytest.mark.parametrize(("host", "cls"), REFUSED)
def test_address_literals_refused_at_submission(
    net: Net, tmp_path: Path, host: str, cls: str
) -> None:
    """The gateway's check: no lookup, no connection, and the refusal names the address class
    and the setting that allows a host."""
    with pytest.raises(UriRejected, match=cls) as e:
        check_uri(f"http://{host}/d.npz", _settings(tmp_path))
    assert "SHARPNESS_URI_ALLOW_HOSTS" in e.value.detail
    with pytest.raises(UriRejected, match=cls):
        open_uri(f"https://{host}:8443/x/d.safetensors", _settings(tmp_path))
    assert net.lookups == [] and net.connects == []


def test_global_addresses_pass_the_check(net: Net, tmp_path: Path) -> None:
    """Classification only: no connection is made to these."""
    for ip in ("8.8.8.8", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert address_class(ipaddress.ip_address(ip)) is None, ip
    net.names["data.example"] = ["93.184.216.34", "2001:4860:4860::8888"]
    got = resolve_checked("https://data.example/d.npz", _settings(tmp_path))
    assert [str(a) for a in got] == ["93.184.216.34", "2001:4860:4860::8888"]
    assert net.connects == []


def test_loopback_server_sees_no_connection(net: Net, server: CountingServer, tmp_path: Path):
    port = server.server_address[1]
    for uri in (f"http://127.0.0.1:{port}/d.npz", f"http://localhost:{port}/d.npz"):
        with pytest.raises(UriRejected, match="loopback") as e:
            open_uri(uri, _settings(tmp_path))
        assert "SHARPNESS_URI_ALLOW_HOSTS" in e.value.detail
    assert server.accepted == 0 and net.connects == []


def test_names_are_resolved_and_every_address_checked(net: Net, tmp_path: Path) -> None:
    """A name is looked up by the worker (not at submission); one bad address refuses it."""
    net.names["metadata.example"] = ["169.254.169.254"]
    net.names["mixed.example"] = ["93.184.216.34", "10.0.0.1"]
    net.names["mapped.example"] = ["::ffff:127.0.0.1"]
    s = _settings(tmp_path)
    for name, cls, ip in (
        ("metadata.example", "link-local", "169.254.169.254"),
        ("mixed.example", "private", "10.0.0.1"),
        ("mapped.example", "IPv4-mapped loopback", "::ffff:127.0.0.1"),
    ):
        check_uri(f"http://{name}/d.npz", s)  # no lookup at submission
        assert net.lookups == []
        shown = re.escape(f"'{name}' ({ipaddress.ip_address(ip)}) is")
        with pytest.raises(UriRejected, match=f"{shown} an? {cls} address"):
            open_uri(f"http://{name}/d.npz", s)
        assert net.lookups == [name]
        net.lookups.clear()
    assert net.connects == []
    with pytest.raises(UriRejected, match="cannot resolve host 'nowhere.example'"):
        open_uri("http://nowhere.example/d.npz", s)


def test_allowed_host_is_fetched_from_the_checked_address(
    net: Net, server: CountingServer, tmp_path: Path
) -> None:
    """An allowed name is resolved once and the connection goes to that address, with the
    URI's Host header: a second lookup (DNS rebinding) never happens."""
    port = server.server_address[1]
    net.names["data.internal"] = ["127.0.0.1"]
    s = _settings(tmp_path, uri_allow_hosts=["Data.Internal"])
    path = open_uri(f"http://data.internal:{port}/d.npz", s)
    assert path.read_bytes() == BODY
    assert net.lookups == ["data.internal"]
    assert net.connects == [("127.0.0.1", port)]
    assert server.requests == [("/d.npz", f"data.internal:{port}")]


def test_allowed_literal_and_fallback_over_addresses(
    net: Net, server: CountingServer, tmp_path: Path
) -> None:
    port = server.server_address[1]
    s = _settings(tmp_path, uri_allow_hosts=["127.0.0.1"])
    assert open_uri(f"http://127.0.0.1:{port}/d.npz", s).read_bytes() == BODY
    # an allowed name whose first address does not answer (nothing listens on ::1 there):
    # the next checked address is tried
    net.names["twice.internal"] = ["::1", "127.0.0.1"]
    s = _settings(tmp_path, uri_allow_hosts=["twice.internal"])
    assert open_uri(f"http://twice.internal:{port}/d.npz", s).read_bytes() == BODY
    assert net.connects[-2:] == [("::1", port), ("127.0.0.1", port)]
    assert net.lookups == ["twice.internal"]


def test_redirects_go_through_the_check(net: Net, server: CountingServer, tmp_path: Path):
    port = server.server_address[1]
    net.names["data.internal"] = ["127.0.0.1"]
    net.names["metadata.example"] = ["169.254.169.254"]
    s = _settings(tmp_path, uri_allow_hosts=["data.internal"])
    base = f"http://data.internal:{port}"
    # followed where the target passes: another allowed URL
    assert open_uri(f"{base}/to/data.internal:{port}/d.npz", s).read_bytes() == BODY
    # refused where it does not, before connecting to the target
    for target, cls in (
        ("169.254.169.254/d.npz", "link-local"),
        ("10.0.0.1/d.npz", "private"),
        ("metadata.example/d.npz", "link-local"),
        (f"127.0.0.1:{port}/d.npz", "loopback"),  # the same server, by a host not allowed
    ):
        before = server.accepted
        with pytest.raises(UriRejected, match=cls):
            open_uri(f"{base}/to/{target}", s)
        assert server.accepted == before + 1  # only the redirecting request
    with pytest.raises(UriRejected, match="more than 5 redirects"):
        open_uri(f"{base}/loop.npz", s)
    assert {host for host, _ in net.connects} == {"127.0.0.1"}  # never the refused targets
    cached = list((tmp_path / "var" / "cache").iterdir())
    assert len(cached) == 1 and not cached[0].name.startswith(".download-")  # the first only


def test_redirect_to_a_refused_scheme(net: Net, tmp_path: Path) -> None:
    s = _settings(tmp_path, uri_schemes=["http"], uri_allow_hosts=["data.internal"])
    net.names["data.internal"] = ["127.0.0.1"]

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(301)
            self.send_header("Location", "file:///etc/passwd")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(UriRejected, match="scheme 'file' is not allowed"):
            open_uri(f"http://data.internal:{srv.server_address[1]}/d.npz", s)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def test_pinned_request_keeps_host_and_tls_name() -> None:
    """The request goes to the checked address while Host and the TLS server name (which the
    certificate is verified against) stay the URI's host; no socket is opened."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"x")

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        for ip in ("93.184.216.34", "2001:4860:4860::8888"):
            resp = uris._send_pinned(
                client, "https://data.example:8443/a/d.npz?v=2", [ipaddress.ip_address(ip)]
            )
            resp.close()
    assert [str(r.url) for r in seen] == [
        "https://93.184.216.34:8443/a/d.npz?v=2",
        "https://[2001:4860:4860::8888]:8443/a/d.npz?v=2",
    ]
    assert {r.headers["host"] for r in seen} == {"data.example:8443"}
    assert {r.extensions["sni_hostname"] for r in seen} == {"data.example"}


def test_environment_proxies_are_not_used(
    net: Net, server: CountingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy would make the connection itself, past the check."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    port = server.server_address[1]
    s = _settings(tmp_path, uri_allow_hosts=["127.0.0.1"])
    assert open_uri(f"http://127.0.0.1:{port}/d.npz", s).read_bytes() == BODY
    assert net.connects == [("127.0.0.1", port)]


# ---------------------------------------------------------------------------------- gateway
@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The gateway's test settings, taking http(s) URIs from one allowed host."""
    update = {"uri_schemes": ["file", "http", "https"], "uri_allow_hosts": ["data.internal"]}
    return settings.model_copy(update=update)


def test_submission_refuses_internal_literals(net: Net, client: TestClient, model_id: str):
    def submit(uri: str):
        return client.post(
            "/v1/jobs",
            json={"model": model_id, "dataset": {"uri": uri}, "measures": [{"name": "trace"}]},
        )

    for uri, cls in (
        ("http://169.254.169.254/latest/d.npz", "link-local"),
        ("http://10.0.0.1/d.npz", "private"),
        ("https://[::ffff:127.0.0.1]/d.npz", "IPv4-mapped loopback"),
        ("http://localhost:8000/d.npz", "loopback"),
    ):
        body = assert_problem(
            submit(uri), 422, "dataset.uri", f"{cls} address", "SHARPNESS_URI_ALLOW_HOSTS"
        )
        assert body["type"].endswith("uri-rejected"), body
    # names are checked by the worker, which resolves them; an allowed host passes
    assert submit("https://data.internal/d.npz").status_code == 202
    assert submit("https://data.example/d.npz").status_code == 202
    assert net.connects == [] and net.lookups == []


def test_worker_refusal_is_the_jobs_problem(net: Net, tmp_path: Path) -> None:
    """The worker's load step turns the refusal into the job's problem (a 422-class input
    error naming dataset.uri, the address class and the setting), with no connection made."""
    from types import SimpleNamespace

    from tasks.contract.spec import DatasetRef
    from tasks.worker.loaders import LoadError
    from tasks.worker.loading import dataset_path

    net.names["metadata.example"] = ["169.254.169.254"]
    rt = SimpleNamespace(settings=_settings(tmp_path), blobs=None)
    for uri in ("http://metadata.example/d.npz", "http://169.254.169.254/latest/d.npz"):
        with pytest.raises(LoadError) as e:
            dataset_path(rt, DatasetRef(uri=uri), "dataset")  # type: ignore[arg-type]
        assert e.value.status == 422
        assert "dataset.uri" in e.value.detail and "link-local address" in e.value.detail
        assert "SHARPNESS_URI_ALLOW_HOSTS" in e.value.detail
    assert net.connects == []


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (openssl), and its key."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
            *("-addext", f"subjectAltName=DNS:{name}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_verifies_the_uri_host_while_connecting_to_the_checked_address(
    net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS to 127.0.0.1 with the server name and certificate check of the URI's host: a
    certificate for that name is accepted, one for another name refused."""
    good_cert, good_key = _certificate(tmp_path, "data.internal")
    other_cert, other_key = _certificate(tmp_path, "other.internal")
    bundle = tmp_path / "cas.pem"
    bundle.write_text(good_cert.read_text() + other_cert.read_text())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    net.names["data.internal"] = ["127.0.0.1"]
    s = _settings(tmp_path, uri_allow_hosts=["data.internal"])
    for cert, key, ok in ((good_cert, good_key, True), (other_cert, other_key, False)):
        srv = CountingServer()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        srv.socket = context.wrap_socket(srv.socket, server_side=True)
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        try:
            uri = f"https://data.internal:{srv.server_address[1]}/d.npz"
            if ok:
                assert open_uri(uri, s).read_bytes() == BODY
                assert srv.requests == [("/d.npz", f"data.internal:{srv.server_address[1]}")]
            else:
                with pytest.raises(UriRejected, match="Hostname mismatch"):
                    open_uri(uri, s)
                assert srv.requests == []
        finally:
            srv.shutdown()
            srv.server_close()
            thread.join()
    assert {host for host, _ in net.connects} == {"127.0.0.1"}
