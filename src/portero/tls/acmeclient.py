"""ACME (RFC 8555) through certbot's own library (`acme`, `josepy`): the account, an order for one host, the answers
to its HTTP-01 challenges, and the certificate. Every JWS and every CSR is the libraries'; nothing here signs or
encodes by hand.

The calls block (`acme` speaks HTTP through requests), so the manager runs each step in a thread, and between the
steps makes the router serve the challenges on every worker (and, with Redis, on every portero) before the CA is
told to look. Each attempt looks its account up by key (a `newAccount` with the same key answers with the existing
account's URL): a CA that forgot the account (Pebble forgets everything when it restarts) gets a new one, same key.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256, RS256
from josepy.jwk import JWK, JWKEC

import portero
from portero.tls import certs
from portero.tls.certs import AcmeFailure

NETWORK_TIMEOUT_S = 30  # one HTTP call to the CA


@dataclass
class Pending:
    challenge: messages.ChallengeBody
    response: challenges.ChallengeResponse
    token: str
    key_authorization: str


@dataclass
class Order:
    acme: client.ClientV2
    resource: messages.OrderResource
    key_pem: bytes  # the new certificate's private key
    pending: list[Pending]  # challenges to answer; empty when the CA had valid authorizations already


def new_account_key() -> str:
    """A new account key (ECDSA P-256, signing with ES256), as JWK JSON."""
    return JWKEC(key=ec.generate_private_key(ec.SECP256R1())).json_dumps()


def connect(directory_url: str, jwk_json: str, email: str | None, ca_file: str | None) -> client.ClientV2:
    """A client of the CA at `directory_url`, with this key's account (registered now if the CA has none)."""
    key = JWK.json_loads(jwk_json)
    alg = ES256 if isinstance(key, JWKEC) else RS256
    net = client.ClientNetwork(key, alg=alg, user_agent=f"portero/{portero.__version__}", timeout=NETWORK_TIMEOUT_S)
    if ca_file is not None:
        net.verify_ssl = ca_file  # type: ignore[assignment]  # requests' `verify` takes a CA bundle's path too
    try:
        directory = client.ClientV2.get_directory(directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        try:
            acme.new_account(registration)
        except errors.ConflictError as exc:  # this key has an account there already: use it
            net.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
    except Exception as exc:
        raise AcmeFailure(f"account at {directory_url}: {describe(exc)}") from exc
    return acme


def begin(acme: client.ClientV2, host: str, key_type: str) -> Order:
    """A new key and an order for `host`; the HTTP-01 challenges to answer and their key authorizations."""
    key = certs.new_key(key_type)
    key_pem = certs.key_pem(key)
    try:
        resource = acme.new_order(crypto_util.make_csr(key_pem, [host]))
    except Exception as exc:
        raise AcmeFailure(f"order for {host}: {describe(exc)}") from exc
    pending: list[Pending] = []
    account_key = acme.net.key
    assert account_key is not None
    for authorization in resource.authorizations:
        if authorization.body.status == messages.STATUS_VALID:
            continue  # proved recently: the CA reuses it
        offered = [c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)]
        if not offered:
            kinds = ", ".join(str(c.chall.typ) for c in authorization.body.challenges)
            raise AcmeFailure(f"order for {host}: the CA offers no HTTP-01 challenge (only {kinds})")
        challenge = offered[0]
        chall = challenge.chall
        assert isinstance(chall, challenges.HTTP01)
        response, validation = chall.response_and_validation(account_key)
        pending.append(Pending(challenge, response, chall.encode("token"), str(validation)))
    return Order(acme, resource, key_pem, pending)


def answer(order: Order) -> None:
    """Tell the CA to check each challenge now (the router answers them already)."""
    for item in order.pending:
        try:
            order.acme.answer_challenge(item.challenge, item.response)
        except Exception as exc:
            raise AcmeFailure(f"answering the challenge: {describe(exc)}") from exc


def finish(order: Order, timeout_s: float) -> str:
    """Wait for the CA to validate, finalize with the CSR, and return the certificate chain (PEM)."""
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout_s)
    try:
        done = order.acme.poll_and_finalize(order.resource, deadline)
    except Exception as exc:
        raise AcmeFailure(describe(exc)) from exc
    if not done.fullchain_pem:
        raise AcmeFailure("the CA finalized the order without a certificate")
    return str(done.fullchain_pem)


def describe(exc: BaseException) -> str:
    """One line for a person: what the CA said, or why it could not be reached."""
    if isinstance(exc, errors.ValidationError):
        problems = [
            f"{authz.body.identifier.value}: {chall.error.detail or chall.error.typ}"
            for authz in exc.failed_authzrs
            for chall in authz.body.challenges
            if chall.error is not None
        ]
        return "validation failed: " + "; ".join(problems)
    if isinstance(exc, errors.TimeoutError):
        return "the CA did not finish in time"
    if isinstance(exc, errors.IssuanceError):
        return f"the CA refused to issue: {exc.error.detail or exc.error.typ}"
    if isinstance(exc, messages.Error):
        return f"the CA says {exc.typ}: {exc.detail}"
    if isinstance(exc, requests.exceptions.SSLError):
        return (
            f"the CA's HTTPS certificate is not trusted ({_short(exc)}); set router.tls.acme.ca_file for a private CA"
        )
    if isinstance(exc, requests.RequestException):
        return f"cannot reach the CA: {_short(exc)}"
    return f"{type(exc).__name__}: {exc}"


def _short(exc: BaseException) -> str:
    text = str(exc)
    markers = ("Connection refused", "Connection aborted", "timed out", "Name or service not known")
    for marker in (*markers, "certificate verify failed"):
        if marker in text:
            return marker
    return text[:200]
