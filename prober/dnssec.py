"""DNSSEC facts from answers asked with EDNS and DO=1: validation (AD), signatures, Extended DNS Errors.

A validating resolver that finds a zone bogus answers SERVFAIL, which on its own
reads like any resolver failure.  The DNS layer asks again with checking
disabled (CD=1): when that answers, the failure is the zone's DNSSEC, and
``explain`` validates the answer against the zone's DNSKEY RRset itself with
dnspython's ``dns.dnssec`` to say which signature or key failed.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import dns.edns
import dns.exception
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from .model import DnssecState

# (qname, rdtype) -> the CD=1 response, or None when it could not be fetched
Fetch = Callable[[dns.name.Name, int], Awaitable[dns.message.Message | None]]
RRSIG_MIN_FRACTION = 0.1  # a tenth of the signature's validity: day-long on-the-fly signatures do not alarm


def extended_errors(response: dns.message.Message) -> tuple[str, ...]:
    """RFC 8914 options of a response as 'Signature Expired (7): text'."""
    out = []
    for option in response.extended_errors():
        try:
            name = dns.edns.EDECode.to_text(option.code).replace("_", " ").title().replace("Dnssec", "DNSSEC")
        except ValueError:
            name = "Extended DNS Error"
        out.append(f"{name} ({int(option.code)})" + (f": {option.text[:200]}" if option.text else ""))
    return tuple(out)


def earliest_rrsig(response: dns.message.Message) -> tuple[float, float, str] | None:
    """(expiration, validity seconds, signer) of the answer's earliest-expiring RRSIG, if any."""
    best: tuple[float, float, str] | None = None
    for rrset in response.answer:
        if rrset.rdtype != dns.rdatatype.RRSIG:
            continue
        for sig in rrset:
            if best is None or sig.expiration < best[0]:
                best = (float(sig.expiration), float(sig.expiration - sig.inception),
                        sig.signer.to_text(omit_final_dot=True).lower())
    return best


def is_expiring(state: DnssecState, min_hours: float, now: float) -> bool:
    """The earliest signature expires within min(min_hours, a tenth of its validity period)."""
    if state.rrsig_expires is None or state.rrsig_validity is None:
        return False
    window = min(min_hours * 3600.0, state.rrsig_validity * RRSIG_MIN_FRACTION)
    return state.rrsig_expires - now < window


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


async def explain(fetch: Fetch, response: dns.message.Message) -> str | None:
    """Validate a CD=1 answer against its signer's DNSKEY RRset; the first failure, in words, or None."""
    signers = {sig.signer for rrset in response.answer if rrset.rdtype == dns.rdatatype.RRSIG for sig in rrset}
    if not signers:
        return "the answer carries no RRSIG, although the zone is expected to be signed (a missing or " \
               "stripped signature, or a DS at the parent for an unsigned zone)"
    signer = min(signers)
    keys_reply = await fetch(signer, dns.rdatatype.DNSKEY)
    zone = signer.to_text(omit_final_dot=True)
    keys = keys_reply and keys_reply.get_rrset(keys_reply.answer, signer, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
    if keys is None:
        return f"no DNSKEY RRset for {zone} could be fetched, so no signature can validate"
    key_sigs = keys_reply.get_rrset(keys_reply.answer, signer, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                                    dns.rdatatype.DNSKEY)
    failure = _check(keys, key_sigs, {signer: keys}, zone) or await _ds_mismatch(fetch, signer, keys, zone)
    if failure:
        return failure
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.RRSIG:
            continue
        sigs = response.get_rrset(response.answer, rrset.name, rrset.rdclass, dns.rdatatype.RRSIG, rrset.rdtype)
        failure = _check(rrset, sigs, {signer: keys}, zone)
        if failure:
            return failure
    return None


async def _ds_mismatch(fetch: Fetch, signer: dns.name.Name, keys: dns.rrset.RRset, zone: str) -> str | None:
    """The parent's DS RRset, when none of it matches a key of the DNSKEY RRset (a botched key rollover)."""
    import dns.dnssec  # only where a signature is checked: its import costs ~30 ms of every start
    reply = await fetch(signer, dns.rdatatype.DS)
    ds_set = reply and reply.get_rrset(reply.answer, signer, dns.rdataclass.IN, dns.rdatatype.DS)
    if not ds_set:
        return None
    for ds in ds_set:
        for key in keys:
            try:
                if dns.dnssec.make_ds(signer, key, ds.digest_type) == ds:
                    return None
            except (dns.dnssec.UnsupportedAlgorithm, ValueError, dns.exception.DNSException):
                continue
    tags = ", ".join(str(ds.key_tag) for ds in ds_set)
    have = ", ".join(str(dns.dnssec.key_id(key)) for key in keys)
    return (f"the DS for {zone} at its parent (key tag {tags}) matches no key in the zone's DNSKEY RRset "
            f"(key tags {have}): a key rollover that replaced the key before the DS")


def _check(rrset: dns.rrset.RRset, sigs: dns.rrset.RRset | None, keys: dict, zone: str) -> str | None:
    import dns.dnssec  # only where a signature is checked: its import costs ~30 ms of every start
    what = f"{dns.rdatatype.to_text(rrset.rdtype)} of {rrset.name.to_text(omit_final_dot=True)}"
    if not sigs:
        return f"the {what} has no RRSIG"
    now = time.time()
    tags = {dns.dnssec.key_id(key) for rdataset in keys.values() for key in rdataset}
    reasons = []
    for sig in sigs:
        # Times and key tags first: they need no cryptography, and are what usually breaks.
        text = ("expired" if sig.expiration < now else "not yet valid" if sig.inception > now
                else "unknown key" if sig.key_tag not in tags else _verify(rrset, sig, keys, now))
        if text is None:
            return None
        reasons.append(_reason(sig, text, zone))
    return f"the RRSIG over the {what} " + "; ".join(reasons[:2])


def _verify(rrset: dns.rrset.RRset, sig, keys: dict, now: float) -> str | None:
    """The signature's own check with dnspython; None when it verifies or cannot be checked here."""
    import dns.dnssec  # only where a signature is checked: its import costs ~30 ms of every start
    try:
        dns.dnssec.validate_rrsig(rrset, sig, keys, now=now)
        return None
    except ImportError:  # dnspython's DNSSEC needs a newer cryptography than this host has
        return None
    except (dns.dnssec.ValidationFailure, dns.dnssec.UnsupportedAlgorithm, dns.exception.DNSException) as exc:
        return str(exc)


def _reason(sig, text: str, zone: str) -> str:
    by = f"by key {sig.key_tag} of {zone}"
    if text == "expired":
        return f"{by} expired at {when(sig.expiration)}"
    if text == "not yet valid":
        return f"{by} is not valid until {when(sig.inception)}"
    if text == "unknown key":
        return f"names key {sig.key_tag}, which is not in the DNSKEY RRset of {zone}"
    return f"{by} does not verify ({text})"
