"""SMTP settings from the environment, and the password staying out of every text."""

from __future__ import annotations

import pytest

from capacity_assets.config import smtp_settings
from capacity_assets.notify.smtp import SmtpSettings

SECRET = "hunter2-Sup3r-s3cret"


def test_from_env_defaults_and_starttls_port():
    s = smtp_settings(
        {"CAPACITY_SMTP_HOST": "mail.example.com", "CAPACITY_SMTP_FROM": "cap@example.com"}
    )
    assert (s.host, s.port, s.starttls, s.sender, s.configured) == (
        "mail.example.com",
        25,
        False,
        "cap@example.com",
        True,
    )
    s = smtp_settings(
        {
            "CAPACITY_SMTP_HOST": "mail.example.com",
            "CAPACITY_SMTP_STARTTLS": "True",
            "CAPACITY_SMTP_USER": "robot@example.com",
            "CAPACITY_SMTP_PASSWORD": SECRET,
        }
    )
    assert (s.port, s.starttls, s.sender, s.password) == (587, True, "robot@example.com", SECRET)
    s = smtp_settings(
        {"CAPACITY_SMTP_HOST": "m", "CAPACITY_SMTP_STARTTLS": "false", "CAPACITY_SMTP_PORT": "2525"}
    )
    assert (s.port, s.starttls) == (2525, False)
    assert not smtp_settings({}).configured


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"CAPACITY_SMTP_STARTTLS": "maybe"},
            "CAPACITY_SMTP_STARTTLS must be true or false, not 'maybe'",
        ),
        (
            {"CAPACITY_SMTP_PORT": "smtp"},
            "CAPACITY_SMTP_PORT must be a port number (1-65535), not 'smtp'",
        ),
        ({"CAPACITY_SMTP_PORT": "70000"}, "CAPACITY_SMTP_PORT must be a port number"),
    ],
)
def test_from_env_rejects_bad_values(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        smtp_settings({"CAPACITY_SMTP_HOST": "m", **env})


def test_repr_never_shows_the_password():
    s = SmtpSettings(host="m", user="robot", password=SECRET, sender="cap@example.com")
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert SECRET not in text
        assert "password='***'" in text
    assert "password=''" in repr(SmtpSettings(host="m"))
    assert s.scrub(f"server said: {SECRET}") == "server said: ***"


def test_nothing_to_send_opens_no_connection():
    assert SmtpSettings(host="127.0.0.1", port=1).send([]) == []
