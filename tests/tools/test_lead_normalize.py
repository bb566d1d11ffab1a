"""lead.normalize: a free-mail or disposable domain never stands for a company."""

from __future__ import annotations

import pytest

from lib.maildomains import is_company_domain, mailbox_provider
from runs.tools.builtin import NormalizeLead
from tests.tools import tool_call


def normalize(**fields):
    tool = NormalizeLead()
    return tool.run(tool.Args(company="Acme", **fields), tool_call()).model_dump()


@pytest.mark.parametrize(
    ("domain", "provider"),
    [
        ("gmail.com", "free_mail"),
        ("GMX.de", "free_mail"),
        ("yahoo.co.uk", "free_mail"),
        ("proton.me", "free_mail"),
        ("mailinator.com", "disposable"),  # on both lists: disposable wins
        ("eu.mailinator.com", "disposable"),
        ("acme.com", None),
        ("co.uk", None),
        ("mail.acme.com", None),
        ("", None),
    ],
)
def test_mail_services_are_told_from_companies(domain, provider):
    assert mailbox_provider(domain) == provider
    assert is_company_domain(domain) is (provider is None and bool(domain))


@pytest.mark.parametrize(
    ("fields", "domain", "source", "mailbox"),
    [
        ({"email": "Ana@Acme.com"}, "acme.com", "email", "company"),
        ({"email": "ana@gmail.com"}, "", "none", "free_mail"),
        ({"email": "ana@mailinator.com"}, "", "none", "disposable"),
        (
            {"email": "ana@gmail.com", "website": "https://www.acme.io/x"},
            "acme.io",
            "website",
            "free_mail",
        ),
        ({"email": "ana@acme.com", "website": "acme.io"}, "acme.io", "website", "company"),
        # A mail service typed as the website is no company either.
        ({"email": "ana@gmail.com", "website": "gmail.com"}, "", "none", "free_mail"),
        ({"email": "ana@acme.com", "website": "https://gmail.com"}, "acme.com", "email", "company"),
        ({}, "", "none", "none"),
    ],
)
def test_the_company_domain_comes_from_the_website_or_a_company_address(
    fields, domain, source, mailbox
):
    result = normalize(**fields)
    assert (result["domain"], result["domain_source"], result["mailbox"]) == (
        domain,
        source,
        mailbox,
    )


def test_the_address_is_kept_whatever_its_domain():
    assert normalize(email=" Ana@GMail.com ")["email"] == "ana@gmail.com"
