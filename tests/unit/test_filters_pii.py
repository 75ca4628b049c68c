"""E-mail and public IP masking, with private and reserved addresses kept."""

import pytest

from pipeline.filters.pii import PIIConfig, PIIFormatter


def test_emails_are_masked_and_counted():
    pii = PIIFormatter()
    text = "Write to jane.doe+news@mail.example.co.uk or to BOB@Example.org."
    assert pii.transform(text) == "Write to email@example.com or to email@example.com."
    assert pii.take_stats() == {"emails_masked": 2}


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("8.8.8.8", True),
        ("203.0.114.7", True),
        ("10.0.0.1", False),  # private
        ("192.168.1.20", False),
        ("172.16.5.4", False),
        ("127.0.0.1", False),  # loopback
        ("169.254.0.9", False),  # link-local
        ("100.64.0.1", False),  # shared address space
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
    ],
)
def test_only_public_ips_are_masked(address, masked):
    pii = PIIFormatter()
    out = pii.transform(f"Server at {address}, port 80.")
    assert out == ("Server at 22.214.171.124, port 80." if masked else f"Server at {address}, port 80.")
    assert pii.take_stats().get("ips_masked", 0) == int(masked)


@pytest.mark.parametrize("text", ["version 1234.5.6.7", "build 8.8.8.8.1", "256.1.1.1", "8.8.8"])
def test_longer_or_invalid_dotted_numbers_are_not_ips(text):
    assert PIIFormatter().transform(text) == text


def test_placeholders_are_not_counted_again():
    pii = PIIFormatter()
    once = pii.transform("mail me@there.com from 8.8.4.4")
    pii.take_stats()
    assert pii.transform(once) == once
    assert pii.take_stats() == {}


def test_each_kind_can_be_switched_off():
    text = "me@there.com 8.8.8.8"
    assert PIIFormatter(PIIConfig(mask_emails=False)).transform(text) == "me@there.com 22.214.171.124"
    assert PIIFormatter(PIIConfig(mask_ips=False, email_placeholder="<email>")).transform(text) == "<email> 8.8.8.8"
