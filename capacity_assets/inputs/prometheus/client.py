"""Talking to one server: credentials, retries, and HTTP answers turned into errors that say what to fix.

Every error message names the server's URL and the query, and never a credential: they end up in
run logs that many people read.
"""

from __future__ import annotations

import logging
import re
import time

import requests

from capacity_assets.inputs.prometheus.errors import PrometheusError
from capacity_assets.inputs.prometheus.queries import DAY_S
from capacity_assets.inputs.prometheus.urls import _redact, _split

# the variables config reads the credentials from (config.PROM_CREDENTIALS), named in the messages
ENV_USER, ENV_PASSWORD, ENV_TOKEN = (
    "CAPACITY_PROM_USER",
    "CAPACITY_PROM_PASSWORD",
    "CAPACITY_PROM_TOKEN",
)
logger = logging.getLogger(__name__)


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "…"


class _Client:
    """One server: base URL, credentials, retries.

    ``credentials`` is ``config.prometheus_credentials()``'s {token, user, password} ('' or missing:
    not set), passed in so that configuration is read in one place; ``None`` is none at all.
    """

    def __init__(
        self,
        url: str,
        timeout: float,
        retries: int,
        session: requests.Session | None,
        credentials: dict | None = None,
    ):
        self.base, url_creds = _split(url)
        self.endpoint = self.base + "/api/v1/query_range"
        self.timeout, self.retries = float(timeout), max(0, int(retries))
        given = credentials or {}
        token, user = given.get("token") or None, given.get("user") or None
        password = given.get("password")  # None: unset; '' is an empty password, as given
        # never shown anyway; scrubbed as a second line of defence (too short ones would mangle the text)
        self._secrets = [
            s for s in (token, password, url_creds[1] if url_creds else None) if s and len(s) >= 4
        ]
        if token and user:
            raise self.error(
                f"both {ENV_TOKEN} and {ENV_USER} are set: set one of them (bearer token or basic auth)"
            )
        in_url = bool(url_creds and any(url_creds))  # 'https://:password@host' counts too
        if in_url and (
            token or user
        ):  # one would be dropped silently, and a 401 would blame the wrong one
            raise self.error(
                f"the URL carries credentials and {ENV_TOKEN if token else ENV_USER} is set too: "
                f"give them one way only"
            )
        if user and password is None:
            raise self.error(f"{ENV_USER} is set but {ENV_PASSWORD} is not")
        self.session = session or requests.Session()
        self.own_session = session is None
        self.auth = (user, password) if user else (url_creds if in_url else None)
        self.headers = {"Accept": "application/json", "User-Agent": "capacity_assets"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.auth_kind = "token" if token else ("env" if user else ("url" if self.auth else None))

    def close(self) -> None:
        if self.own_session:
            self.session.close()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _redact(text)

    def error(
        self,
        problem: str,
        resource: str | None = None,
        query: str | None = None,
        cls=PrometheusError,
    ):
        where = f"; {resource} query: {_one_line(query, 2000)}" if query else ""
        return cls(
            self.scrub(f"Prometheus at {self.base}: {problem}{where}"),
            url=self.base,
            resource=resource,
            query=query,
        )

    def query_range(self, query: str, start: int, end: int, resource: str) -> list[dict]:
        """The matrix of one range query at a one-day step, after retries; errors name URL and query."""
        data = {"query": query, "start": str(start), "end": str(end), "step": str(DAY_S)}
        problem, attempts = "", self.retries + 1
        for attempt in range(attempts):
            wait = min(0.5 * 2**attempt, 30.0)
            try:
                r = self.session.post(
                    self.endpoint,
                    data=data,
                    timeout=self.timeout,
                    auth=self.auth,
                    headers=self.headers,
                    allow_redirects=False,
                )
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
            except requests.ConnectionError as e:
                problem = f"cannot connect ({_reason(e)})"
            except requests.RequestException as e:
                raise self.error(f"request failed ({_reason(e)})", resource, query) from None
            else:
                if r.status_code == 429 or r.status_code >= 500:
                    problem = f"HTTP {r.status_code}: {self._error_text(r)}"
                    wait = max(wait, _retry_after(r))
                else:
                    return self._matrix(r, query, resource)
            if attempt + 1 < attempts:
                logger.debug(f"{self.base}: {problem}; retrying in {wait:g} s")
                time.sleep(wait)
        tries = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
        raise self.error(problem + tries, resource, query)

    def _error_text(self, r: requests.Response) -> str:
        try:
            body = r.json()
            if isinstance(body, dict) and body.get("error"):
                kind = body.get("errorType")
                kind = (
                    f"{kind}: " if kind and not str(kind).isdigit() else ""
                )  # VictoriaMetrics repeats the code
                return _one_line(kind + str(body["error"]), 2000)
        except ValueError:
            pass
        return _one_line(r.text or r.reason or "(empty answer)")

    def _matrix(self, r: requests.Response, query: str, resource: str) -> list[dict]:
        code = r.status_code
        if 300 <= code < 400:
            raise self.error(
                f"HTTP {code}: the server redirects to {r.headers.get('Location', '?')}; "
                f"use that address in CAPACITY_METRICS",
                resource,
                query,
            )
        if code == 401 or code == 403:
            sent = {
                "env": f"the credentials from {ENV_USER}/{ENV_PASSWORD}",
                "url": "the credentials from the URL",
                "token": f"the token from {ENV_TOKEN}",
            }.get(self.auth_kind)
            what = (
                f"the server refused {sent}"
                if sent
                else f"the server needs credentials: set {ENV_USER} and {ENV_PASSWORD}, or {ENV_TOKEN}"
            )
            raise self.error(
                f"HTTP {code} {'Unauthorized' if code == 401 else 'Forbidden'}: {what}",
                resource,
                query,
            )
        if code == 404:
            raise self.error(
                "HTTP 404: no Prometheus API here; the URL must be the API's root, the part before "
                "/api/v1 (e.g. http://host:9090, or http://vmselect:8481/select/0/prometheus)",
                resource,
                query,
            )
        if code != 200:
            raise self.error(
                f"the server answered HTTP {code}: {self._error_text(r)}", resource, query
            )
        try:
            body = r.json()
        except ValueError:
            raise self.error(
                f"the answer is not Prometheus JSON (Content-Type {r.headers.get('Content-Type', '?')}, "
                f"starts with {_one_line(r.text, 120)!r}); is this the Prometheus API's root?",
                resource,
                query,
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            text = body.get("error") if isinstance(body, dict) else None
            raise self.error(
                f"the server answered an error: {_one_line(text or body)}", resource, query
            )
        result = (body.get("data") or {}).get("result")
        kind = (body.get("data") or {}).get("resultType")
        if kind != "matrix" or not isinstance(result, list):
            raise self.error(f"expected a matrix from query_range, got {kind!r}", resource, query)
        for warning in body.get("warnings") or []:
            logger.warning(
                self.scrub(
                    f"Prometheus at {self.base}: {resource}: server warning: {_one_line(warning)}"
                )
            )
        return result


def _reason(e: Exception) -> str:
    text = str(e)
    found = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found[-1].strip()
    for hint in ("Name or service not known", "Connection refused", "certificate verify failed"):
        if hint in text:
            return hint
    return _one_line(text, 300)


def _retry_after(r: requests.Response) -> float:
    try:
        return min(float(r.headers.get("Retry-After", 0)), 30.0)
    except ValueError:
        return 0.0
