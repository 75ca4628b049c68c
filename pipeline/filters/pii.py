"""Masks e-mail addresses and public IPv4 addresses, as FineWeb does.

Every e-mail address becomes ``email_placeholder`` and every IPv4 address of a single host on the
public internet becomes ``ip_placeholder``; private, loopback, link-local, shared, multicast and
other reserved addresses (``10.0.0.1``, ``192.168.1.1``, ``127.0.0.1``) are kept, since they
identify no one.
FineWeb rotates through several placeholders; one fixed placeholder each keeps the output
independent of the order documents arrive in. ``stats`` counts ``emails_masked`` and
``ips_masked`` (a placeholder already in the text is not counted again). Nothing is dropped.
"""

from __future__ import annotations

import ipaddress
import re

from pipeline.config import config_dataclass
from pipeline.stage import TextTransform

_EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# Not part of a longer number or dotted sequence ("1234.5.6.7", "1.2.3.4.5").
_IPV4 = re.compile(rf"(?<![0-9.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\.?[0-9])")


@config_dataclass
class PIIConfig:
    mask_emails: bool = True
    mask_ips: bool = True
    email_placeholder: str = "email@example.com"
    ip_placeholder: str = "22.214.171.124"


class PIIFormatter(TextTransform):
    name = "pii"

    def __init__(self, config: PIIConfig | None = None):
        super().__init__()
        self.config = config or PIIConfig()

    def _mask_email(self, match: re.Match) -> str:
        if match.group() != self.config.email_placeholder:
            self.stats["emails_masked"] += 1
        return self.config.email_placeholder

    def _mask_ip(self, match: re.Match) -> str:
        address = match.group()
        ip = ipaddress.IPv4Address(address)
        if address == self.config.ip_placeholder or not ip.is_global or ip.is_multicast:
            return address
        self.stats["ips_masked"] += 1
        return self.config.ip_placeholder

    def transform(self, text: str) -> str:
        if self.config.mask_emails and "@" in text:
            text = _EMAIL.sub(self._mask_email, text)
        if self.config.mask_ips:
            text = _IPV4.sub(self._mask_ip, text)
        return text
