"""`router.tls` and `admin.tls` in the spec: what loads, and refusals that name the field and say what would work."""

from __future__ import annotations

import pytest

from portero.spec import SpecError, parse_spec

SERVICE = "services: {portal: {command: run}}"


def refused(router: str, admin: str = "{}") -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(f"admin: {admin}\nrouter: {router}\n{SERVICE}", source="portero.yaml", environ={})
    return str(caught.value)


def test_acme_hosts_default_to_the_routes_exact_hosts_that_no_given_certificate_names() -> None:
    text = """
router:
  tls:
    certificates: [{cert_file: /etc/ssl/w.pem, hosts: ["*.example.com", "given.example.com"]}]
    acme: {email: ops@example.com}
  routes:
    - {host: portal.example.com, service: portal, redirect_https: true, hsts: {include_subdomains: true}}
    - {host: given.example.com, service: portal}
    - {host: "*.example.com", service: portal}
    - {host: "*", service: portal}
"""
    spec = parse_spec(text + SERVICE, source="portero.yaml", environ={})
    assert spec.router.acme_hosts == ("portal.example.com",)
    assert spec.router.tls is not None
    assert spec.router.tls.acme is not None
    assert spec.router.tls.acme.directory_url == "https://acme-v02.api.letsencrypt.org/directory"
    assert spec.router.routes[0].hsts is not None
    assert spec.router.routes[0].hsts.header == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize(
    ("router", "admin", "says"),
    [
        ("{tls: {}}", "{}", "router.tls: needs `certificates` (files) or `acme` (obtained by portero)"),
        (
            "{routes: [{host: a.example, service: portal, redirect_https: true}]}",
            "{}",
            "routes.0.redirect_https: needs `router.tls`",
        ),
        ("{port: 8000, tls: {port: 8000, acme: {hosts: [a.example]}}}", "{}", "tls.port: 8000 is `router.port`"),
        ("{tls: {acme: {}}}", "{}", "no host to obtain a certificate for"),
        ("{tls: {acme: {directory_url: 'http://ca.example/dir', hosts: [a.example]}}}", "{}", "directory_url"),
        ("{tls: {acme: {hosts: ['*.example.com']}}}", "{}", "router.tls.acme.hosts.0"),
        ("{tls: {acme: {hosts: [a.example]}, min_version: '1.1'}}", "{}", "router.tls.min_version"),
        ("{}", "{tls: {router_host: a.example}}", "admin.tls.router_host: needs `router.tls`"),
        ("{}", "{tls: {cert_file: /a.pem, router_host: a.example}}", "needs exactly one of `cert_file`"),
    ],
)
def test_refusals_name_the_field(router: str, admin: str, says: str) -> None:
    assert says in refused(router, admin)
