"""Dataset URIs: which ones a job may name, and turning one into a local file.

The gateway calls `check_uri` when a job is submitted (a refusal is a 422 naming
`dataset.uri`); the worker calls `open_uri` when it loads the data, which checks again, since
the file system may have changed in between. Torch-free.

Rules: the scheme must be in `settings.uri_schemes`. A `file:` URI must be absolute, carry no
`..` segment, and resolve (symlinks followed) to a regular file below `settings.data_root`;
with no data root configured, file URIs are refused. `http`/`https` (off by default) are
fetched by the worker with a streaming download capped at `settings.max_uri_bytes`; enabling
them lets workers fetch any address they can reach, so only do so on a trusted network.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tasks.settings import Settings

SUFFIXES = (".npz", ".safetensors")
SUPPORTED = ("file", "http", "https")


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
    """The resolved local path of a file: URI, or UriRejected."""
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
        raise UriRejected(f"{raw} is not a regular file")
    _suffix_ok(resolved.name)
    size = resolved.stat().st_size
    if size > settings.max_uri_bytes:
        raise UriRejected(
            f"{raw} is {size} bytes, above the {settings.max_uri_bytes}-byte limit "
            "(SHARPNESS_MAX_URI_BYTES)"
        )
    return resolved


def check_uri(uri: str, settings: Settings) -> None:
    """Raise UriRejected unless a job may name this URI. For http(s) the size is checked
    while downloading, since a server's Content-Length cannot be trusted."""
    scheme = _scheme(uri, settings)
    if scheme == "file":
        _file_path(uri, settings)
        return
    parts = urlsplit(uri)
    if not parts.hostname:
        raise UriRejected(f"{uri!r} has no host")
    if parts.username or parts.password:
        raise UriRejected("credentials in URIs are refused; they would be stored in the job")
    _suffix_ok(parts.path)


def open_uri(uri: str, settings: Settings, timeout_s: float = 60.0) -> Path:
    """A local path holding the URI's bytes: the file itself for file:, a download under
    `settings.data_dir/cache` for http(s) (fresh each call, written atomically)."""
    check_uri(uri, settings)
    if _scheme(uri, settings) == "file":
        return _file_path(uri, settings)
    return _download(uri, settings, timeout_s)


def _download(uri: str, settings: Settings, timeout_s: float) -> Path:
    import httpx  # only workers that fetch http(s) data need it

    cache = Path(settings.data_dir) / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    suffix = ".npz" if urlsplit(uri).path.lower().endswith(".npz") else ".safetensors"
    final = cache / (hashlib.sha256(uri.encode()).hexdigest() + suffix)
    fd, tmp_name = tempfile.mkstemp(dir=cache, prefix=".download-")
    tmp = Path(tmp_name)
    size = 0
    try:
        with (
            os.fdopen(fd, "wb") as fh,
            httpx.stream("GET", uri, timeout=timeout_s, follow_redirects=False) as resp,
        ):
            if resp.status_code != 200:
                raise UriRejected(f"GET {uri} answered {resp.status_code}")
            for chunk in resp.iter_bytes(1 << 20):
                size += len(chunk)
                if size > settings.max_uri_bytes:
                    raise UriRejected(
                        f"{uri} is larger than the {settings.max_uri_bytes}-byte limit "
                        "(SHARPNESS_MAX_URI_BYTES)"
                    )
                fh.write(chunk)
        os.replace(tmp, final)
    except httpx.HTTPError as e:
        tmp.unlink(missing_ok=True)
        raise UriRejected(f"GET {uri} failed: {e.__class__.__name__}: {e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
