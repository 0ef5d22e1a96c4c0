"""Delivering mails through one SMTP server: one connection per run.

``send`` reports each message's outcome instead of stopping at the first refusal, so that one bad
mailbox does not keep every other manager from their digest, and the caller records exactly what
was delivered. Failing to reach or log in to the server is different: nothing can be delivered, so
it raises ``SmtpUnavailable`` naming host:port and the reason. The password is never part of a
repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr

DEFAULT_TIMEOUT_S = 30.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SmtpUnavailable(RuntimeError):
    """The SMTP server could not be reached or refused the session: nothing was sent."""


@dataclass(frozen=True)
class SendResult:
    """The outcome of one message: ``error`` is the server's reply (or the network error) when not ok."""

    message_id: str
    recipient: str
    ok: bool
    error: str = ""


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


@dataclass(frozen=True, repr=False)
class SmtpSettings:
    """Where and how to send. ``port`` defaults to 587 with STARTTLS, else 25."""

    host: str = ""
    port: int = 25
    user: str = ""
    password: str = field(default="", compare=False)
    sender: str = ""
    starttls: bool = False
    timeout: float = DEFAULT_TIMEOUT_S

    @classmethod
    def parse(
        cls,
        host: str = "",
        port: str = "",
        user: str = "",
        password: str = "",
        sender: str = "",
        starttls: str = "",
        timeout: str = "",
    ) -> SmtpSettings:
        """From the settings as written (``config.smtp_settings`` reads them from CAPACITY_SMTP_*);
        raises ValueError naming the setting."""
        tls = _flag("CAPACITY_SMTP_STARTTLS", starttls)
        port_text = port.strip() or ("587" if tls else "25")
        try:
            number = int(port_text)
            if not 0 < number < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"CAPACITY_SMTP_PORT must be a port number (1-65535), not {port_text!r}"
            ) from None
        try:
            seconds = float(timeout.strip() or DEFAULT_TIMEOUT_S)
        except ValueError:
            seconds = float("nan")
        if (
            not 0 < seconds < float("inf")
        ):  # 0 would be a non-blocking socket, NaN or below 0 refused
            raise ValueError(f"CAPACITY_SMTP_TIMEOUT must be seconds above 0, not {timeout!r}")
        user = user.strip()
        sender = sender.strip() or (user if "@" in user else f"capacity@{socket.getfqdn()}")
        return cls(
            host=host.strip(),
            port=number,
            user=user,
            password=password,
            sender=sender,
            starttls=tls,
            timeout=seconds,
        )

    @property
    def configured(self) -> bool:
        return bool(self.host)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return (
            f"SmtpSettings(host={self.host!r}, port={self.port}, user={self.user!r}, "
            f"password={'***' if self.password else ''!r}, sender={self.sender!r}, "
            f"starttls={self.starttls}, timeout={self.timeout})"
        )

    __str__ = __repr__

    def scrub(self, text: str) -> str:
        """``text`` without the password (or the AUTH PLAIN blob that carries it), should a server
        or a library ever echo it back."""
        if not self.password:
            return text
        secrets = [
            self.password,
            base64.b64encode(f"\0{self.user}\0{self.password}".encode()).decode(),
            base64.b64encode(self.password.encode()).decode(),
        ]
        for s in secrets:
            text = text.replace(s, "***")
        return text

    def send(self, messages: Iterable[EmailMessage]) -> list[SendResult]:
        """Send each message over one connection; one result per message, in order. Raises
        ``SmtpUnavailable`` when the server cannot be reached, refuses STARTTLS or the login."""
        messages = list(messages)
        if not messages:
            return []
        if not self.configured:
            raise SmtpUnavailable("no SMTP server configured: set CAPACITY_SMTP_HOST")
        try:
            server = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        except (OSError, smtplib.SMTPException) as e:
            raise SmtpUnavailable(
                self.scrub(f"cannot connect to SMTP server {self.address}: {reason(e)}")
            ) from None
        try:
            try:
                server.ehlo_or_helo_if_needed()
                if self.starttls:
                    server.starttls(context=ssl.create_default_context())
                    server.ehlo()
                if self.user:
                    server.login(self.user, self.password)
            except (OSError, smtplib.SMTPException) as e:
                step = (
                    "login"
                    if self.user and not isinstance(e, smtplib.SMTPNotSupportedError)
                    else "session"
                )
                raise SmtpUnavailable(
                    self.scrub(
                        f"SMTP server {self.address} refused the {step}{' as ' + repr(self.user) if step == 'login' else ''}"
                        f": {reason(e)}"
                    )
                ) from None
            return self._send_all(server, messages)
        finally:
            try:
                server.quit()
            except (OSError, smtplib.SMTPException):
                server.close()

    def _send_all(self, server: smtplib.SMTP, messages: list[EmailMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        lost = ""
        for msg in messages:
            mid, to = str(msg.get("Message-ID", "")), _recipients(msg)
            if lost:
                results.append(SendResult(mid, to, False, lost))
                continue
            try:
                refused = server.send_message(msg, from_addr=parseaddr(str(msg["From"]))[1] or None)
                results.append(
                    SendResult(
                        mid, to, not refused, self.scrub(_refused_text(refused)) if refused else ""
                    )
                )
            except smtplib.SMTPServerDisconnected as e:
                lost = self.scrub(f"connection to {self.address} lost: {reason(e)}")
                results.append(SendResult(mid, to, False, lost))
            except smtplib.SMTPException as e:  # this message refused; the session goes on
                results.append(SendResult(mid, to, False, self.scrub(reason(e))))
            except (
                OSError
            ) as e:  # the network failed (smtplib's errors are OSErrors too: caught above)
                lost = self.scrub(f"connection to {self.address} lost: {reason(e)}")
                results.append(SendResult(mid, to, False, lost))
        return results


def _recipients(msg: EmailMessage) -> str:
    return ", ".join(a for _, a in getaddresses([str(v) for v in msg.get_all("To", [])]))


def _text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def _refused_text(refused: dict) -> str:
    return "; ".join(f"{addr}: {code} {_text(msg)}" for addr, (code, msg) in refused.items())


def reason(e: BaseException) -> str:
    """A one-line reason a person can act on: the server's code and reply, or the network error."""
    if isinstance(e, smtplib.SMTPRecipientsRefused):
        return "recipient refused: " + _refused_text(e.recipients)
    if isinstance(e, smtplib.SMTPSenderRefused):
        return f"sender {e.sender!r} refused: {e.smtp_code} {_text(e.smtp_error)}"
    if isinstance(e, smtplib.SMTPResponseException):
        return f"{e.smtp_code} {_text(e.smtp_error)}"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused (is the server running, and is this the right port?)"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(e, socket.gaierror):
        return f"unknown host ({e.strerror or e})"
    if isinstance(e, ssl.SSLError):
        return f"TLS failed ({e.reason or e})"
    return " ".join(f"{type(e).__name__}: {e}".split())
