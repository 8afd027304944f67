"""Dataset URI rules (tasks.artifacts.uris), used by the gateway at submission and the worker
at load."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.artifacts.uris import UriRejected, check_uri, open_uri
from tasks.settings import Settings
from tests import http_folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "sub" / "d.npz").write_bytes(b"PK\x05\x06" + bytes(18))
    return r


def _settings(root: Path | None, tmp_path: Path, **kw) -> Settings:
    return Settings(data_root=root, data_dir=tmp_path / "var", **kw)


def test_file_under_root(root: Path, tmp_path: Path) -> None:
    s = _settings(root, tmp_path)
    uri = (root / "sub" / "d.npz").as_uri()
    check_uri(uri, s)
    assert open_uri(uri, s) == (root / "sub" / "d.npz").resolve()


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("ftp://example.org/d.npz", "scheme 'ftp' is not allowed"),
        ("s3://bucket/d.npz", "scheme 's3' is not allowed"),
        ("https://example.org/d.npz", "scheme 'https' is not allowed"),
        ("d.npz", "no scheme"),
        ("file://otherhost/d.npz", "only local files"),
        ("file:relative/d.npz", "must be absolute"),
    ],
)
def test_refused_uris(root: Path, tmp_path: Path, uri: str, needle: str) -> None:
    with pytest.raises(UriRejected, match=needle):
        check_uri(uri, _settings(root, tmp_path))


def test_traversal(root: Path, tmp_path: Path) -> None:
    s = _settings(root, tmp_path)
    for uri in (f"file://{root}/../../etc/passwd", f"file://{root}/sub/%2e%2e/%2e%2e/x.npz"):
        with pytest.raises(UriRejected, match="traversal"):
            check_uri(uri, s)


def test_symlink_escaping_root(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.npz"
    outside.write_bytes(b"PK\x05\x06" + bytes(18))
    (root / "link.npz").symlink_to(outside)
    with pytest.raises(UriRejected, match="outside the data root"):
        check_uri((root / "link.npz").as_uri(), _settings(root, tmp_path))


def test_missing_file_and_no_root(root: Path, tmp_path: Path) -> None:
    with pytest.raises(UriRejected, match="no such file"):
        check_uri((root / "nope.npz").as_uri(), _settings(root, tmp_path))
    with pytest.raises(UriRejected, match="SHARPNESS_DATA_ROOT is not set"):
        check_uri((root / "sub" / "d.npz").as_uri(), _settings(None, tmp_path))


def test_size_cap_and_suffix(root: Path, tmp_path: Path) -> None:
    (root / "big.npz").write_bytes(bytes(100))
    with pytest.raises(UriRejected, match="100 bytes"):
        check_uri((root / "big.npz").as_uri(), _settings(root, tmp_path, max_uri_bytes=50))
    (root / "data.csv").write_text("1,2")
    with pytest.raises(UriRejected, match=".npz or .safetensors"):
        check_uri((root / "data.csv").as_uri(), _settings(root, tmp_path))


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "d.npz").write_bytes(b"0123456789" * 10)
    with http_folder.serve(served) as url:
        yield url


def test_http_download_when_allowed(http_root: str, tmp_path: Path) -> None:
    """The test server listens on loopback, which only a host named in uri_allow_hosts may be
    (tests/api/test_uri_addresses.py covers the refusals)."""
    s = _settings(None, tmp_path, uri_schemes=["http"], uri_allow_hosts=["127.0.0.1"])
    path = open_uri(f"{http_root}/d.npz", s)
    assert path.read_bytes() == b"0123456789" * 10
    assert path.parent == tmp_path / "var" / "cache"


def test_http_size_cap_leaves_nothing(http_root: str, tmp_path: Path) -> None:
    allow = {"uri_schemes": ["http"], "uri_allow_hosts": ["127.0.0.1"]}
    s = _settings(None, tmp_path, max_uri_bytes=50, **allow)
    with pytest.raises(UriRejected, match="50-byte limit"):
        open_uri(f"{http_root}/d.npz", s)
    assert list((tmp_path / "var" / "cache").iterdir()) == []
    with pytest.raises(UriRejected, match="404"):
        open_uri(f"{http_root}/missing.npz", _settings(None, tmp_path, **allow))


def test_http_credentials_refused(tmp_path: Path) -> None:
    with pytest.raises(UriRejected, match="credentials"):
        check_uri("http://u:p@example.org/d.npz", _settings(None, tmp_path, uri_schemes=["http"]))
