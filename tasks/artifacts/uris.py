"""Dataset and model URIs: which ones may be named, and turning one into a local file.

The gateway calls `check_uri` when a job is submitted (a refusal is a 422 naming
`dataset.uri`); the worker calls `open_uri` when it loads the data, which checks again, since
the file system may have changed in between. Models registered by reference
(tasks.artifacts.model_refs) go through the same rules, by `local_path`, `check_http` and
`download`: this module is the one place they are written. Torch-free.

Rules: the scheme must be in `settings.uri_schemes`. A `file:` URI must be absolute, carry no
`..` segment, and resolve (symlinks followed) to a regular file below `settings.data_root`;
with no data root configured, file URIs are refused. `http`/`https` (off by default) are
fetched by the worker with a streaming download capped at `settings.max_uri_bytes`.

Outbound addresses: an http(s) host is resolved once, every address it resolves to is
checked, and the connection goes to a checked address (the request keeps the URI's Host
header, and TLS its server name and certificate check, so a second lookup can never hand the
connection to another address: no DNS-rebinding window). Loopback, private, link-local
(169.254.169.254, the cloud metadata service), multicast, reserved, unspecified and other
non-global addresses, and their IPv4-mapped IPv6 forms, are refused before any connection,
unless the URI's host is named in `settings.uri_allow_hosts` (an internal data server).
Redirects go through the same checks, at most MAX_REDIRECTS of them. The gateway checks
address literals (and `localhost`) at submission without any lookup; names are resolved and
checked by the worker. Proxies from the environment are not used (a proxy would make the
connection past the check); SSL_CERT_FILE / SSL_CERT_DIR still name the trusted CAs.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from tasks.settings import Settings

SUFFIXES = (".npz", ".safetensors")
SUPPORTED = ("file", "http", "https")
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
ALLOW_SETTING = "SHARPNESS_URI_ALLOW_HOSTS"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UriRejected(Exception):
    """The URI may not be used; the message says why (it names no secret)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _scheme(uri: str, settings: Settings) -> str:
    scheme = urlsplit(uri).scheme.lower()
    allowed = [s.lower() for s in settings.uri_schemes]
    if not scheme:
        raise UriRejected(f"no scheme in {uri!r}; use file:///path/under/the/data/root")
    if scheme not in allowed or scheme not in SUPPORTED:
        raise UriRejected(
            f"scheme {scheme!r} is not allowed; allowed: {', '.join(allowed) or 'none'} "
            "(SHARPNESS_URI_SCHEMES)"
        )
    return scheme


def _suffix_ok(path: str) -> None:
    if not path.lower().endswith(SUFFIXES):
        raise UriRejected(f"{path!r} must name a .npz or .safetensors file")


def _file_path(uri: str, settings: Settings) -> Path:
    """The resolved local path of a dataset's file: URI, or UriRejected."""
    resolved = local_path(uri, settings)
    if not resolved.is_file():
        raise UriRejected(f"{unquote(urlsplit(uri).path)} is not a regular file")
    _suffix_ok(resolved.name)
    return resolved


def local_path(uri: str, settings: Settings) -> Path:
    """The resolved local path of a file: URI (a file or a folder), or UriRejected: local,
    absolute, no `..` segment, symlinks followed, below `settings.data_root`; a file at most
    `settings.max_uri_bytes`."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise UriRejected(f"file URI host {parts.netloc!r}: only local files (file:///path)")
    if parts.query or parts.fragment:
        raise UriRejected("file URI must not carry a query or fragment")
    raw = unquote(parts.path)
    if "\x00" in raw:
        raise UriRejected("file URI contains a NUL byte")
    if not raw.startswith("/"):
        raise UriRejected(f"file URI path {raw!r} must be absolute")
    if ".." in raw.replace("\\", "/").split("/"):
        raise UriRejected(f"path traversal: {raw!r} contains a '..' segment")
    if settings.data_root is None:
        raise UriRejected("file URIs are disabled: SHARPNESS_DATA_ROOT is not set")
    root = Path(settings.data_root).resolve()
    try:
        resolved = Path(raw).resolve(strict=True)
    except (FileNotFoundError, NotADirectoryError):
        raise UriRejected(f"no such file: {raw}") from None
    except (OSError, RuntimeError) as e:  # symlink loop, permission
        raise UriRejected(f"cannot resolve {raw}: {e.__class__.__name__}") from None
    if not resolved.is_relative_to(root):
        raise UriRejected(
            f"{raw} resolves outside the data root {root} (SHARPNESS_DATA_ROOT); "
            "symlinks are followed before the check"
        )
    if not resolved.is_file():
        return resolved
    size = resolved.stat().st_size
    if size > settings.max_uri_bytes:
        raise UriRejected(
            f"{raw} is {size} bytes, above the {settings.max_uri_bytes}-byte limit "
            "(SHARPNESS_MAX_URI_BYTES)"
        )
    return resolved


def check_uri(uri: str, settings: Settings) -> None:
    """Raise UriRejected unless a job may name this URI. For http(s) the size is checked
    while downloading, since a server's Content-Length cannot be trusted, and the host's
    addresses here only where no lookup is needed (a literal address, localhost)."""
    scheme = _scheme(uri, settings)
    if scheme == "file":
        _file_path(uri, settings)
        return
    check_http(uri, settings)
    _suffix_ok(urlsplit(uri).path)


def scheme_of(uri: str, settings: Settings) -> str:
    """The URI's scheme ("file", "http", "https") when it is allowed, else UriRejected."""
    return _scheme(uri, settings)


def check_http(uri: str, settings: Settings) -> None:
    """What the gateway checks of an http(s) URI without connecting: a host, no credentials,
    a valid port, no address literal (or localhost) it may not reach."""
    _http_parts(uri)
    _check_host_literal(uri, settings)


class UriMissing(UriRejected):
    """The server answered 404: nothing at this URI."""


def open_uri(uri: str, settings: Settings, timeout_s: float = 60.0) -> Path:
    """A local path holding the URI's bytes: the file itself for file:, a download under
    `settings.data_dir/cache` for http(s) (fresh each call, written atomically)."""
    check_uri(uri, settings)
    if _scheme(uri, settings) == "file":
        return _file_path(uri, settings)
    cache = Path(settings.data_dir) / "cache"
    suffix = ".npz" if urlsplit(uri).path.lower().endswith(".npz") else ".safetensors"
    final = cache / (hashlib.sha256(uri.encode()).hexdigest() + suffix)
    return download(uri, settings, final, settings.max_uri_bytes, timeout_s)


def _http_parts(uri: str) -> tuple[str, int]:
    """(host, port) of an http(s) URI, or UriRejected."""
    parts = urlsplit(uri)
    if not parts.hostname:
        raise UriRejected(f"{uri!r} has no host")
    if parts.username or parts.password:
        raise UriRejected("credentials in URIs are refused; they would be stored in the job")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise UriRejected(f"{uri!r} has an invalid port") from None
    return parts.hostname.rstrip(".").lower(), port


def _allowed_host(host: str, settings: Settings) -> bool:
    return host in {h.strip().rstrip(".").lower().strip("[]") for h in settings.uri_allow_hosts}


def address_class(ip: IPAddress) -> str | None:
    """Why an outbound connection to `ip` is refused ("loopback", "private", ...), or None for a
    global unicast address. IPv6 forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4,
    Teredo) are judged by the address they carry."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            inner = address_class(ip.ipv4_mapped)
            return f"IPv4-mapped {inner}" if inner else None
        embedded: list[ipaddress.IPv4Address] = []
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        for inner_ip in embedded:
            inner = address_class(inner_ip)
            if inner:
                return f"{inner} (embedded in an IPv6 address)"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("special-purpose (not globally routable)", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _refusal(uri: str, host: str, ip: IPAddress | None, cls: str) -> UriRejected:
    where = f"host {host!r}" if ip is None or str(ip) == host else f"host {host!r} ({ip})"
    return UriRejected(
        f"{uri}: {where} is {_article(cls)} {cls} address; outbound fetches to loopback, "
        "private, link-local, multicast, reserved and unspecified addresses are refused. To "
        f"fetch from an internal data server, name its host in {ALLOW_SETTING} (a JSON list, e.g. "
        f'["{host}"])'
    )


def _numeric(host: str) -> list[IPAddress] | None:
    """The address(es) of a host given as a numeric address (any form the resolver accepts:
    127.0.0.1, 127.1, 0x7f000001, ::ffff:127.0.0.1), without any lookup; None for a name."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None
    return [_address(info[4][0]) for info in infos]


def _address(sockaddr_host: str | int) -> IPAddress:
    """The address of a getaddrinfo entry (a scoped IPv6 address loses its %zone)."""
    return ipaddress.ip_address(str(sockaddr_host).split("%")[0])


def _check_host_literal(uri: str, settings: Settings) -> None:
    """What can be checked without a lookup: address literals and localhost names."""
    host, _ = _http_parts(uri)
    if _allowed_host(host, settings):
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise _refusal(uri, host, None, "loopback")
    for ip in _numeric(host) or []:
        cls = address_class(ip)
        if cls:
            raise _refusal(uri, host, ip, cls)


def resolve_checked(uri: str, settings: Settings) -> list[IPAddress]:
    """The addresses to connect to for an http(s) URI: its host resolved once, and every
    address checked (all of them: one refused address refuses the host). An allowed host's
    addresses are not checked. Raises UriRejected."""
    host, port = _http_parts(uri)
    _check_host_literal(uri, settings)
    addresses = _numeric(host)
    if addresses is None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise UriRejected(f"{uri}: cannot resolve host {host!r}: {e}") from None
        addresses = [_address(info[4][0]) for info in infos]
    unique = list(dict.fromkeys(addresses))
    if not unique:
        raise UriRejected(f"{uri}: host {host!r} has no address")
    if not _allowed_host(host, settings):
        for ip in unique:
            cls = address_class(ip)
            if cls:
                raise _refusal(uri, host, ip, cls)
    return unique


def _send_pinned(client: Any, uri: str, addresses: list[IPAddress]) -> Any:
    """GET `uri` on a connection to one of `addresses` (tried in order), streamed; the Host
    header and the TLS server name (certificate check included) stay the URI's host."""
    import httpx  # deferred, as in download

    url = httpx.URL(uri)
    last: Exception | None = None
    for ip in addresses:
        request = client.build_request(
            "GET",
            url.copy_with(host=str(ip)),
            headers={"Host": url.netloc.decode("ascii")},
            extensions={"sni_hostname": url.host},
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as e:
            last = e
    assert last is not None
    raise last


def download(
    uri: str, settings: Settings, final: Path, max_bytes: int, timeout_s: float = 60.0
) -> Path:
    """GET an http(s) URI into `final` (written atomically, streamed, at most `max_bytes`,
    every hop's addresses checked); UriMissing for a 404, UriRejected for any other refusal."""
    import httpx  # only workers that fetch http(s) data need it

    _scheme(uri, settings)
    check_http(uri, settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".download-")
    tmp = Path(tmp_name)
    size = 0
    current = uri
    try:
        with (
            os.fdopen(fd, "wb") as fh,
            httpx.Client(
                timeout=timeout_s,
                follow_redirects=False,
                trust_env=False,  # no proxy: it would connect past the check
                verify=httpx.create_ssl_context(trust_env=True),  # SSL_CERT_FILE/_DIR apply
            ) as client,
        ):
            for hop in range(MAX_REDIRECTS + 1):
                addresses = resolve_checked(current, settings)
                with contextlib.closing(_send_pinned(client, current, addresses)) as resp:
                    location = resp.headers.get("location")
                    if resp.status_code in REDIRECTS and location:
                        if hop == MAX_REDIRECTS:
                            raise UriRejected(f"GET {uri}: more than {MAX_REDIRECTS} redirects")
                        current = urljoin(current, location)
                        _scheme(current, settings)
                        if urlsplit(current).scheme.lower() == "file":
                            raise UriRejected(f"GET {uri} redirects to a file: URI")
                        continue
                    if resp.status_code != 200:
                        shown = uri if current == uri else f"{uri} (redirected to {current})"
                        missing = resp.status_code == 404
                        raise (UriMissing if missing else UriRejected)(
                            f"GET {shown} answered {resp.status_code}"
                        )
                    for chunk in resp.iter_bytes(1 << 20):
                        size += len(chunk)
                        if size > max_bytes:
                            raise UriRejected(
                                f"{uri} is larger than the {settings.max_uri_bytes}-byte limit "
                                "(SHARPNESS_MAX_URI_BYTES)"
                            )
                        fh.write(chunk)
                    break
        os.replace(tmp, final)
    except httpx.HTTPError as e:
        tmp.unlink(missing_ok=True)
        raise UriRejected(f"GET {uri} failed: {e.__class__.__name__}: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
