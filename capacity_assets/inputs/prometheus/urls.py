"""CAPACITY_METRICS values that name a Prometheus server, and keeping their credentials out of sight.

The configuration imports this module to tell a server from files, so it loads nothing heavy (no
HTTP client, no pandas).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from capacity_assets.inputs.prometheus.errors import PrometheusError

PREFIX = "prometheus+"


def is_prometheus(url: str) -> bool:
    """Whether CAPACITY_METRICS names a server rather than files (a bad scheme after the prefix still counts,
    so it gets a clear error from ``base_url`` instead of 'file does not exist')."""
    return isinstance(url, str) and url.strip().lower().startswith(PREFIX)


def has_password(url: str) -> bool:
    """Whether a CAPACITY_METRICS value carries credentials that must not be shown."""
    return is_prometheus(url) and _redact(url) != url


def _redact(text: str) -> str:
    return re.sub(r"//[^/@\s]*@", "//***@", str(text))


def _split(url: str) -> tuple[str, tuple[str, str] | None]:
    """(base URL without credentials, credentials found in the URL)."""
    raw = url.strip() if isinstance(url, str) else url
    if not is_prometheus(raw):
        raise PrometheusError(
            f"{_redact(raw)!r} is not a Prometheus URL: expected prometheus+http://host:port "
            f"or prometheus+https://host:port",
            url=_redact(raw),
        )
    rest = raw[len(PREFIX) :]
    try:
        parts = urlsplit(rest)
        port = parts.port
    except ValueError as e:
        raise PrometheusError(
            f"{_redact(raw)!r} is not a valid URL ({e})", url=_redact(raw)
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise PrometheusError(
            f"{_redact(raw)!r}: expected prometheus+http://host:port or prometheus+https://host:port "
            f"(the part after 'prometheus+' must be an http or https URL)",
            url=_redact(raw),
        )
    if parts.query or parts.fragment:
        raise PrometheusError(
            f"{_redact(raw)!r}: the URL cannot have query parameters (?…) or a fragment (#…); "
            f"give the API's root, the part before /api/v1",
            url=_redact(raw),
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host + (f":{port}" if port is not None else "")
    base = f"{scheme}://{netloc}{parts.path}".rstrip("/")
    creds = (parts.username or "", parts.password or "") if parts.username is not None else None
    return base, creds


def base_url(url: str) -> str:
    """The server's base URL from a CAPACITY_METRICS value: prefix, credentials and trailing slash removed,
    so it is safe to print. Give the original value to ``fetch_daily``/``sync``."""
    return _split(url)[0]
