"""Certificate analysis: parsing, SAN matching, chain verification, expiry tiers.

Pure functions over ``cryptography`` objects; the TLS layer captures the
served DER chain and hands it here.  Nothing on the probe path reads files:
the trust store is built once per trust configuration (``TrustStore.load``)
and verdicts are cached for as long as they cannot change.

Trust decisions are made by ``cryptography.x509.verification`` (path
building included); this module only adds diagnosis on top of it — which
certificate expired, whether the hostname is covered, whether the server
left out an intermediate.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, NamedTuple, Sequence, TypeVar

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, x448, x25519
from cryptography.x509.verification import (Criticality, DNSName, ExtensionPolicy, IPAddress,
                                            PolicyBuilder, Store)

from prober import tlspolicy
from prober.model import EXPIRY_TIERS, CertInfo, ChainVerdict

T = TypeVar("T")
_DAY = 86400.0


def _safe(fn: Callable[[], T], default: T) -> T:
    """Call fn; on any error return default.  Served certificates are hostile input:
    cryptography parses extensions lazily, so any accessor may raise."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 - by design: a report field must never crash a probe
        return default


# --------------------------------------------------------------------------
# Parsing and per-certificate facts
# --------------------------------------------------------------------------
# A served certificate changes when someone renews it, not between two probes: a long-running
# prober meets the same DER over and over.  Each one's parse and the facts the report shows
# (names, key, fingerprint, self-signature) are kept per DER, so a steady probe decodes no
# certificate, public key or name; only days_left is computed anew.  Bounded: emptied when full
# (about 4 kB an entry).  Entries by id() hold their certificate, so an id is never reused while
# it is in the table, and every lookup checks the object is the one kept.
_KNOWN_MAX = 8192


@dataclass(slots=True)
class _Known:
    cert: x509.Certificate
    fingerprint: str | None = None
    self_signed: bool | None = None
    infos: dict[str, CertInfo] = dataclasses.field(default_factory=dict)  # per position


_known_der: dict[bytes, _Known] = {}
_known_id: dict[int, _Known] = {}


def _known(cert: x509.Certificate) -> _Known | None:
    known = _known_id.get(id(cert))
    return known if known is not None and known.cert is cert else None


def known_clear() -> None:
    _known_der.clear()
    _known_id.clear()


def parse_chain(ders: Sequence[bytes]) -> tuple[list[x509.Certificate], list[str]]:
    """Parse the served DER certificates; the unparsable ones become error strings."""
    certs: list[x509.Certificate] = []
    errors: list[str] = []
    for index, der in enumerate(ders):
        der = bytes(der)
        known = _known_der.get(der)
        if known is not None:
            certs.append(known.cert)
            continue
        try:
            cert = x509.load_der_x509_certificate(der)
        except Exception as exc:  # noqa: BLE001 - ValueError mostly, but never let it escape
            errors.append(f"served certificate #{index} could not be parsed: {_one_line(exc)}")
            continue
        if len(_known_der) >= _KNOWN_MAX:
            known_clear()
        _known_der[der] = _known_id[id(cert)] = _Known(cert)
        certs.append(cert)
    return certs, errors


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def is_self_signed(cert: x509.Certificate) -> bool:
    """Subject equals issuer and the certificate's own key verifies its signature."""
    known = _known(cert)
    if known is not None and known.self_signed is not None:
        return known.self_signed

    def check() -> bool:
        if cert.subject != cert.issuer:
            return False
        cert.verify_directly_issued_by(cert)
        return True
    answer = _safe(check, False)
    if known is not None:
        known.self_signed = answer
    return answer


def positions(chain: Sequence[x509.Certificate]) -> list[str]:
    """leaf for the first, root for a self-signed last one, intermediate otherwise."""
    out = ["intermediate"] * len(chain)
    if chain:
        out[0] = "leaf"
    if len(chain) > 1 and is_self_signed(chain[-1]):
        out[-1] = "root"
    return out


_KEY_OIDS = {"1.2.840.113549.1.1.1": "RSA", "1.2.840.113549.1.1.10": "RSA-PSS",
             "1.2.840.10045.2.1": "EC", "1.3.101.112": "Ed25519", "1.3.101.113": "Ed448",
             "1.2.840.10040.4.1": "DSA", "1.3.101.110": "X25519", "1.3.101.111": "X448"}


def _key_type_and_size(cert: x509.Certificate) -> tuple[str, int | None]:
    try:
        key = cert.public_key()
    except Exception:  # noqa: BLE001 - unknown or malformed key: name it by its OID
        oid = _safe(lambda: cert.public_key_algorithm_oid.dotted_string, "")
        return _KEY_OIDS.get(oid, oid or "unknown"), None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    for kind, name, size in ((ed25519.Ed25519PublicKey, "Ed25519", 256), (ed448.Ed448PublicKey, "Ed448", 456),
                             (x25519.X25519PublicKey, "X25519", 256), (x448.X448PublicKey, "X448", 448)):
        if isinstance(key, kind):
            return name, size
    return type(key).__name__, None


def _curve(cert: x509.Certificate) -> str | None:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return None
    return tlspolicy.CURVE_NAMES.get(key.curve.name, key.curve.name)


def signature_hash(cert: x509.Certificate) -> str | None:
    """The hash of the certificate's signature, lower case ("sha1", "md5", "sha256"); None for EdDSA."""
    oid = _safe(lambda: cert.signature_algorithm_oid.dotted_string, "")
    if oid in tlspolicy.WEAK_SIGNATURE_OIDS:
        return tlspolicy.WEAK_SIGNATURE_OIDS[oid]
    algorithm = _safe(lambda: cert.signature_hash_algorithm, None)
    return algorithm.name if algorithm is not None else None


def _signature_algorithm(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    name = getattr(oid, "_name", "Unknown OID")
    return oid.dotted_string if name == "Unknown OID" else name


def _general_name_text(name: x509.GeneralName) -> str:
    """DNS names bare, IPs as text; other kinds prefixed so they never match a hostname."""
    if isinstance(name, x509.DNSName):
        return name.value
    if isinstance(name, x509.IPAddress):
        return str(name.value)
    if isinstance(name, x509.RFC822Name):
        return f"email:{name.value}"
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"DirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.RegisteredID):
        return f"RID:{name.value.dotted_string}"
    if isinstance(name, x509.OtherName):
        return f"othername:{name.type_id.dotted_string}"
    return f"{type(name).__name__}:?"


def _san_names(cert: x509.Certificate) -> list[x509.GeneralName]:
    def read() -> list[x509.GeneralName]:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    return _safe(read, [])


def _sans_text(cert: x509.Certificate) -> tuple[str, ...]:
    return tuple(_safe(lambda n=n: _general_name_text(n), "?") for n in _san_names(cert))


def _typed_sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS SANs, IP SANs as text): kept apart so a DNS SAN "1.2.3.4" never matches an IP."""
    names = _san_names(cert)
    dns = [n.value for n in names if isinstance(n, x509.DNSName) and isinstance(n.value, str)]
    ips = [str(n.value) for n in names if isinstance(n, x509.IPAddress)]
    return dns, ips


def _validity(cert: x509.Certificate) -> tuple[float, float]:
    return (_safe(lambda: cert.not_valid_before_utc.timestamp(), 0.0),
            _safe(lambda: cert.not_valid_after_utc.timestamp(), 0.0))


def _serial_hex(cert: x509.Certificate) -> str:
    n = cert.serial_number  # may be negative or zero in the wild
    return f"-{-n:x}" if n < 0 else f"{n:x}"


def fingerprint(cert: x509.Certificate) -> str:
    known = _known(cert)
    if known is not None and known.fingerprint is not None:
        return known.fingerprint
    value = _safe(lambda: cert.fingerprint(hashes.SHA256()).hex(), "")
    if known is not None:
        known.fingerprint = value
    return value


def cert_info(cert: x509.Certificate, position: str, now: float) -> CertInfo:
    """Report facts about one certificate.  Never raises: odd fields get safe values."""
    known = _known(cert)
    info = known.infos.get(position) if known is not None else None
    if info is None:
        info = _cert_info(cert, position, now)
        if known is not None:
            known.infos[position] = info
        return info
    return dataclasses.replace(info, days_left=(info.not_after - now) / _DAY)


def _cert_info(cert: x509.Certificate, position: str, now: float) -> CertInfo:
    not_before, not_after = _validity(cert)
    key_type, key_size = _safe(lambda: _key_type_and_size(cert), ("unknown", None))
    return CertInfo(
        position=position,
        subject=_safe(lambda: cert.subject.rfc4514_string(), "?"),
        issuer=_safe(lambda: cert.issuer.rfc4514_string(), "?"),
        sans=_sans_text(cert),
        serial=_safe(lambda: _serial_hex(cert), ""),
        not_before=not_before,
        not_after=not_after,
        days_left=(not_after - now) / _DAY,
        key_type=key_type,
        key_size=key_size,
        signature_algorithm=_safe(lambda: _signature_algorithm(cert), "unknown"),
        fingerprint_sha256=fingerprint(cert),
        self_signed=is_self_signed(cert),
        authority_key_id=_safe(lambda: _aki_hex(cert), ""),
        curve=_safe(lambda: _curve(cert), None),
        signature_hash=_safe(lambda: signature_hash(cert), None),
    )


def _aki_hex(cert: x509.Certificate) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return aki.key_identifier.hex() if aki.key_identifier else ""


# --------------------------------------------------------------------------
# Hostname matching (RFC 6125 §6.4)
# --------------------------------------------------------------------------
_LABEL = re.compile(r"[a-z0-9_-]+\Z")


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if "%" in text:  # a zone id is local routing, never in a certificate: not an IP here
        return None
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _dns_labels(name: str) -> list[str] | None:
    """Lower-cased labels of an ASCII name, one trailing dot dropped; None if not ASCII.
    Only ASCII is case-folded: str.lower() would turn e.g. the Kelvin sign into "k"."""
    if not name.isascii():
        return None
    if name.endswith("."):
        name = name[:-1]
    return name.lower().split(".")


def san_matches(hostname: str, sans: Sequence[str]) -> bool:
    """Does any SAN cover hostname?  RFC 6125 §6.4.3, SANs only (no CN fallback).

    - ASCII case-insensitive; one trailing dot ignored on either side.
    - An IP hostname matches only SANs that are IPs (compared as addresses).
    - A wildcard only as the complete left-most label, covering exactly one
      label, and only with at least two labels after it: "*.a.com" covers
      "x.a.com", not "x.y.a.com", "a.com" or via "*.com".  No partial
      wildcards ("f*.a.com").  A wildcard may cover an A-label ("xn--…"):
      RFC 6125 only forbids wildcards *inside* an IDN label, which the
      no-partial-wildcard rule already excludes.
    - The hostname must be letters, digits, "-" and "_" in non-empty labels.
    """
    ip = _as_ip(hostname)
    if ip is not None:
        return any(_as_ip(san) == ip for san in sans)
    host = _dns_labels(hostname)
    if not host or not all(_LABEL.match(label) for label in host):
        return False
    for san in sans:
        if _as_ip(san) is not None:
            continue
        labels = _dns_labels(san)
        if labels is None:
            continue
        if labels == host:
            return True
        if labels[0] == "*" and len(labels) >= 3 and len(host) == len(labels) and labels[1:] == host[1:]:
            return True
    return False


# --------------------------------------------------------------------------
# Trust store
# --------------------------------------------------------------------------
class TrustStoreError(ValueError):
    """A ca_file that cannot be used; the message is one sentence for a person."""


@dataclass(frozen=True, eq=False)
class TrustStore:
    """The anchors (certifi's bundle plus an optional ca_file), built once per configuration."""
    store: Store
    anchors: tuple[x509.Certificate, ...]
    by_subject: dict[x509.Name, tuple[x509.Certificate, ...]]
    id: str  # stable across processes: a hash of the anchors' fingerprints
    ca_file: str | None = None
    by_fingerprint: dict[str, x509.Certificate] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_certificates(cls, anchors: Sequence[x509.Certificate], ca_file: str | None = None) -> TrustStore:
        unique = {fingerprint(c): c for c in anchors}
        ordered = tuple(unique[fp] for fp in sorted(unique))
        by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in ordered:
            subject = _safe(lambda cert=cert: cert.subject, None)
            if subject is not None:
                by_subject.setdefault(subject, []).append(cert)
        store_id = hashlib.sha256("".join(sorted(unique)).encode()).hexdigest()[:16]
        return cls(Store(list(ordered)), ordered, {k: tuple(v) for k, v in by_subject.items()},
                   store_id, ca_file, dict(unique))

    @classmethod
    def load(cls, ca_file: str | None = None) -> TrustStore:
        """The store for this trust configuration, memoised per (ca_file path, mtime).

        Raises TrustStoreError when a ca_file cannot be used, unless an earlier
        version of it loaded: a file caught mid-rewrite keeps the last good store.
        """
        key = None if ca_file is None else os.path.abspath(ca_file)
        with _STORES_LOCK:
            cached = _STORES.get(key)
        try:
            stamp = 0 if key is None else _mtime(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            extra = _read_ca_file(key) if key is not None else []
        except TrustStoreError:
            if cached is None:
                raise
            return cached[1]
        store = cls.from_certificates([*_certifi_anchors(), *extra], key)
        with _STORES_LOCK:
            _STORES[key] = (stamp, store)  # replaces the entry for an older mtime
        return store

    def issuers_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """Anchors whose subject is cert's issuer name (signature not checked here)."""
        return _safe(lambda: self.by_subject.get(cert.issuer, ()), ())


_STORES: dict[str | None, tuple[int, TrustStore]] = {}
_STORES_LOCK = threading.Lock()
_CERTIFI: list[x509.Certificate] = []


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError as exc:
        raise TrustStoreError(f"ca_file {path}: cannot read it ({exc.strerror or exc}).") from None


def _certifi_anchors() -> list[x509.Certificate]:
    with _STORES_LOCK:
        if not _CERTIFI:
            with open(certifi.where(), "rb") as fh, warnings.catch_warnings():
                # A few public roots have non-positive serials; that is not ours to report.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                _CERTIFI.extend(x509.load_pem_x509_certificates(fh.read()))
        return list(_CERTIFI)


def _read_ca_file(path: str) -> list[x509.Certificate]:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise TrustStoreError(f"ca_file {path}: cannot read it ({exc.strerror or exc}).") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TrustStoreError(f"ca_file {path}: holds no PEM certificate; give a file of "
                              "-----BEGIN CERTIFICATE----- blocks.")
    return certs


# --------------------------------------------------------------------------
# Chain verification and diagnosis
# --------------------------------------------------------------------------
def _normal_host(hostname: str) -> str:
    return (hostname[:-1] if hostname.endswith(".") else hostname).lower()


def _subject_for(hostname: str) -> DNSName | IPAddress:
    ip = _as_ip(hostname)
    return IPAddress(ip) if ip is not None else DNSName(_normal_host(hostname))


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _server_verify(chain: Sequence[x509.Certificate], subject: DNSName | IPAddress, store: TrustStore,
                   at: float, ee_policy: ExtensionPolicy | None = None) -> None:
    """Raise unless the library builds a path from chain[0] to an anchor (WebPKI rules)."""
    builder = PolicyBuilder().store(store.store).time(_when(at))
    if ee_policy is not None:
        builder = builder.extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
    builder.build_server_verifier(subject).verify(chain[0], list(chain[1:]))


# For the trust check: the leaf must have a SAN (the server verifier insists), nothing else.
_SAN_ONLY_EE = ExtensionPolicy.permit_all().require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)


def _builds_to_anchor(chain: Sequence[x509.Certificate], store: TrustStore, at: float) -> bool:
    """Path building at time `at`, with the hostname taken from the leaf itself.

    The leaf's own SAN stands in for the hostname, and the leaf's extensions are
    not judged (only a SAN is required), so only the path to an anchor counts.
    A leaf without a usable SAN falls back to the client verifier, which needs no
    name at all (its CA policy wants clientAuth on intermediates that carry an EKU).
    """
    dns, ips = _typed_sans(chain[0])
    subjects: list[DNSName | IPAddress] = [IPAddress(ip) for ip in map(_as_ip, ips[:1]) if ip is not None]
    subjects += [DNSName("wildcard" + name[1:] if name.startswith("*.") else name) for name in dns[:2]]
    for subject in subjects:
        try:
            _server_verify(chain, subject, store, at, _SAN_ONLY_EE)
            return True
        except Exception:  # noqa: BLE001 - an invalid name or a failed path: try the next
            continue
    if subjects:
        return False
    try:
        (PolicyBuilder().store(store.store).time(_when(at))
         .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all())
         .build_client_verifier().verify(chain[0], list(chain[1:])))
        return True
    except Exception:  # noqa: BLE001
        return False


def _trust_times(chain: Sequence[x509.Certificate], store: TrustStore) -> list[float]:
    """Instants at which to judge trust apart from expiry: inside every served
    certificate's and matching anchor's validity window, else inside fewer of them
    (an off-path served certificate may have expired), down to the leaf's alone."""
    served = [_validity(c) for c in chain]
    anchors = [_validity(a) for a in _related_anchors(chain, store)]
    times = []
    for windows in (served + anchors, served, served[:1] + anchors, served[:1]):
        lo, hi = max(w[0] for w in windows), min(w[1] for w in windows)
        if lo <= hi:
            times.append(lo + (hi - lo) / 2)
    return list(dict.fromkeys(times))


def _related_anchors(chain: Sequence[x509.Certificate], store: TrustStore) -> list[x509.Certificate]:
    """Anchors named as the subject or issuer of a served certificate: the ones a path can end at."""
    found: dict[str, x509.Certificate] = {}
    for cert in chain:
        for name in (_safe(lambda cert=cert: cert.issuer, None), _safe(lambda cert=cert: cert.subject, None)):
            for anchor in store.by_subject.get(name, ()) if name is not None else ():
                found[fingerprint(anchor)] = anchor
    return list(found.values())


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Issuer name matches and the signature verifies; a signature we cannot check counts."""
    try:
        if cert.issuer != issuer.subject:
            return False
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except Exception:  # noqa: BLE001 - unsupported algorithm etc.: the name match must do
        return _safe(lambda: cert.issuer == issuer.subject, False)


def _is_incomplete(chain: Sequence[x509.Certificate], store: TrustStore) -> bool:
    """Walk up from the leaf through the served certificates: incomplete when a
    certificate's issuer is neither served nor an anchor.  Served certificates off
    that path (e.g. a legacy cross-sign whose own issuer was retired) don't count."""
    current, seen = chain[0], set()
    while fingerprint(current) not in seen:
        seen.add(fingerprint(current))
        if any(_signed_by(current, a) for a in store.issuers_of(current)) or is_self_signed(current):
            return False
        parent = next((c for c in chain if c is not current and _signed_by(current, c)), None)
        if parent is None:
            return True
        current = parent
    return False  # a loop among served certificates: every issuer was served


def _short_name(cert: x509.Certificate) -> str:
    def cn() -> str:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return f"CN={attrs[0].value}" if attrs else cert.subject.rfc4514_string()
    return _safe(cn, "?")


def _time_problems(chain: Sequence[x509.Certificate], now: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
    expired, early = [], []
    for cert, position in zip(chain, positions(chain)):
        not_before, not_after = _validity(cert)
        label = f"{position} {_short_name(cert)}"
        if now > not_after:
            expired.append(label)
        if now < not_before:
            early.append(label)
    return tuple(expired), tuple(early)


def _hostname_covered(cert: x509.Certificate, hostname: str) -> bool:
    dns, ips = _typed_sans(cert)
    return san_matches(hostname, ips if _as_ip(hostname) is not None else dns)


def verify_chain(chain: Sequence[x509.Certificate], hostname: str, store: TrustStore, now: float) -> ChainVerdict:
    """Verify the served chain for hostname at `now`, and say precisely what is wrong."""
    if not chain:
        return ChainVerdict(verified=False, hostname_match=False, trusted=False, incomplete=False,
                            self_signed_leaf=False, error="the server sent no certificate")
    raw = None
    try:
        _server_verify(chain, _subject_for(hostname), store, now)
        library_ok = True
    except Exception as exc:  # noqa: BLE001 - VerificationError, or ValueError for a bad name
        library_ok, raw = False, _one_line(exc)
    hostname_match = _hostname_covered(chain[0], hostname)
    trusted = library_ok or any(_builds_to_anchor(chain, store, t) for t in _trust_times(chain, store))
    path = anchored_path(chain, store)
    expired, not_yet_valid = _time_problems(chain, now)
    incomplete = _is_incomplete(chain, store)
    cause, defect = (None, None) if trusted or not path else _strict_cause(raw or "", path)
    served = [i for c in path for i, s in enumerate(chain) if s is c]
    anchor = fingerprint(path[-1]) if path and len(served) < len(path) else None
    verdict = ChainVerdict(verified=library_ok and hostname_match, hostname_match=hostname_match,
                           trusted=trusted, incomplete=incomplete, self_signed_leaf=is_self_signed(chain[0]),
                           expired=expired, not_yet_valid=not_yet_valid, anchored=bool(path),
                           profile_defect=defect, strict_cause=cause, path=tuple(served), anchor=anchor,
                           revocable=_revocable(path, store))
    if verdict.verified:
        return verdict
    return dataclasses.replace(verdict, error=_failure_words(verdict, chain, hostname, raw or ""))


def _failure_words(v: ChainVerdict, chain: Sequence[x509.Certificate], hostname: str, raw: str) -> str:
    """Why the chain does not verify, as a sentence: never the verifier's debug text."""
    leaf = f"leaf {_short_name(chain[0])}"
    if v.profile_defect:
        return v.profile_defect
    if v.strict_cause == "weak_signature":
        return "a served certificate is signed with an algorithm browsers refuse"
    if v.strict_cause == "weak_key":
        return "a served certificate has a key browsers refuse"
    if v.incomplete:
        return f"the issuer of a served certificate ({_short_issuer(chain[-1])}) was not sent and is not a trust anchor"
    if not v.trusted:
        if "maximum depth" in raw or "depth" in raw.split(":")[-1]:
            return (f"the path from the {leaf} towards a trust anchor is longer than verifiers allow "
                    f"({len(chain)} certificates served; maximum depth exceeded)")
        if v.self_signed_leaf:
            return f"the {leaf} is self-signed and not in the trust store"
        return f"no path from the {leaf} to a trust anchor: the chain ends at {_short_issuer(chain[-1])}"
    if v.expired:
        return f"the {v.expired[0]} has expired"
    if v.not_yet_valid:
        return f"the {v.not_yet_valid[0]} is not valid yet"
    if not v.hostname_match:
        return f"no subjectAltName of the {leaf} covers {hostname} (RFC 6125 6.4.3)"
    return f"the chain served for {hostname} does not verify under the Web PKI profile"


def _short_issuer(cert: x509.Certificate) -> str:
    return _safe(lambda: cert.issuer.rfc4514_string(), "?")


# --------------------------------------------------------------------------
# The lenient (OpenSSL-style) path, and what the strict profile refuses on it
# --------------------------------------------------------------------------
def _signature_verifies(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Check cert's signature with issuer's key by hand: this also works for SHA-1 and MD5,
    which ``verify_directly_issued_by`` refuses to consider."""
    try:
        key, signature, tbs = issuer.public_key(), cert.signature, cert.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            key.verify(signature, tbs, params if params is not None else padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, tbs, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, tbs, cert.signature_hash_algorithm)
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, tbs)
        else:
            return False
        return True
    except Exception:  # noqa: BLE001 - a bad signature, an unknown algorithm, a malformed key
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    return _safe(lambda: cert.issuer == issuer.subject, False) and _signature_verifies(cert, issuer)


def _is_ca(cert: x509.Certificate) -> bool:
    """CA:TRUE in basicConstraints, whatever its criticality (what OpenSSL checks)."""
    def read() -> bool:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    return _safe(read, False)


_MAX_DEPTH = 8


def anchored_path(chain: Sequence[x509.Certificate], store: TrustStore) -> tuple[x509.Certificate, ...]:
    """leaf, issuer, ..., anchor: an OpenSSL-style path (names, signatures by hand, CA:TRUE),
    ignoring time and the strict profile; () when none reaches a trust anchor."""
    if not chain:
        return ()
    current, path = chain[0], [chain[0]]
    for _ in range(_MAX_DEPTH):
        if fingerprint(current) in store.by_fingerprint:
            return tuple(path)  # a served anchor (or a leaf pinned in ca_file)
        anchor = next((a for a in store.issuers_of(current) if _issued_by(current, a)), None)
        if anchor is not None:
            return (*path, anchor)
        parent = next((c for c in chain[1:] if all(c is not p for p in path) and _is_ca(c)
                       and _issued_by(current, c)), None)
        if parent is None:
            return ()
        path.append(parent)
        current = parent
    return ()


def path_of(chain: Sequence[x509.Certificate], verdict: ChainVerdict, store: TrustStore
            ) -> tuple[x509.Certificate, ...]:
    """The anchored path a verdict found, as certificates (the store's anchor last, when not served)."""
    path = [chain[i] for i in verdict.path if i < len(chain)]
    anchor = store.by_fingerprint.get(verdict.anchor) if verdict.anchor is not None else None
    return tuple(path + [anchor] if path and anchor is not None else path)


def _revocable(path: Sequence[x509.Certificate], store: TrustStore) -> tuple[int, ...]:
    """Positions on the path of the certificates whose revocation can be asked: not an anchor,
    issued by the next one, and naming a CRL distribution point or an OCSP responder."""
    def names_a_source(cert: x509.Certificate) -> bool:
        return (_ext(cert, x509.CRLDistributionPoints) is not None
                or _ext(cert, x509.AuthorityInformationAccess) is not None)
    return tuple(n for n, cert in enumerate(path[:-1])
                 if fingerprint(cert) not in store.by_fingerprint and names_a_source(cert))


def _ext(cert: x509.Certificate, kind: type) -> x509.Extension | None:
    return _safe(lambda: cert.extensions.get_extension_for_class(kind), None)


def _cert_defect(cert: x509.Certificate, is_ca: bool) -> str | None:
    """The strict-profile defect of one certificate on an anchored path, in words, or None."""
    if is_ca:
        bc = _ext(cert, x509.BasicConstraints)
        if bc is None:
            return "has no basicConstraints extension"
        if not bc.critical:
            return "has basicConstraints not marked critical (RFC 5280 4.2.1.9 requires it in a CA certificate)"
        ku = _ext(cert, x509.KeyUsage)
        if ku is not None and not _safe(lambda: ku.value.key_cert_sign, True):
            return "lacks keyCertSign in its keyUsage"
    if not is_self_signed(cert):
        aki = _ext(cert, x509.AuthorityKeyIdentifier)
        if aki is None:
            return "has no authorityKeyIdentifier"
        if aki.critical:
            return "has authorityKeyIdentifier marked critical"
        if aki.value.key_identifier is None:
            return "has an authorityKeyIdentifier without a keyIdentifier (issuer-and-serial form only)"
    return None


def _strict_cause(raw: str, path: Sequence[x509.Certificate]) -> tuple[str, str | None]:
    """Why an anchored path fails the strict verifier: (cause, profile defect in words)."""
    if "Forbidden signature algorithm" in raw or any(
            signature_hash(c) in tlspolicy.WEAK_HASHES for c in path[:-1] if not is_self_signed(c)):
        return "weak_signature", None
    if "Forbidden public key" in raw:
        return "weak_key", None
    for index, cert in enumerate(path):
        defect = _cert_defect(cert, is_ca=index > 0)
        if defect is not None:
            role = "leaf" if index == 0 else ("trust anchor" if index == len(path) - 1 else "intermediate")
            return "profile", f"the {role} {_short_name(cert)} {defect}"
    return "profile", _verifier_words(raw)


def _verifier_words(raw: str) -> str:
    """The verifier's reason for a strict-profile failure we have no own check for, in words."""
    match = re.search(r"(\d+(?:\.\d+)+): ", raw)
    extension = tlspolicy.EXTENSION_NAMES.get(match.group(1), f"extension {match.group(1)}") if match else None
    reason = next((words for fragment, words in tlspolicy.VERIFIER_REASONS if fragment in raw), None)
    if extension and reason:
        return f"a certificate on the path to the trust anchor {reason} ({extension})"
    if reason:
        return f"a certificate on the path to the trust anchor {reason}"
    return "a certificate on the path to the trust anchor breaks the Web PKI certificate profile"


# --------------------------------------------------------------------------
# The verification cache
# --------------------------------------------------------------------------
class CacheInfo(NamedTuple):
    hits: int
    misses: int
    size: int
    maxsize: int


class _Entry(NamedTuple):
    verdict: ChainVerdict
    valid_from: float
    valid_until: float  # exclusive


class _VerdictCache:
    """LRU of verdicts, each used only inside the window where its answer cannot change."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: tuple, now: float) -> ChainVerdict | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.valid_from <= now < entry.valid_until:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry.verdict
            self.misses += 1
            return None

    def put(self, key: tuple, entry: _Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._entries), self.maxsize)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


# Keyed by (chain, hostname, store): 10,000 names behind one wildcard certificate are 10,000
# entries, so the cache is sized for a large fleet (an entry is a few hundred bytes).
_CACHE = _VerdictCache(32768)


def _stable_window(chain: Sequence[x509.Certificate], store: TrustStore) -> tuple[float, float]:
    """While now is in [latest not_before, earliest not_after) of the served certificates
    and the anchors they name, no validity check flips, so the verdict holds."""
    windows = [_validity(c) for c in (*chain, *_related_anchors(chain, store))]
    return max(w[0] for w in windows), min(w[1] for w in windows)


def verify_chain_cached(chain: Sequence[x509.Certificate], hostname: str, store: TrustStore,
                        now: float) -> ChainVerdict:
    """verify_chain, memoised per (served fingerprints, hostname, store id)."""
    if not chain:
        return verify_chain(chain, hostname, store, now)
    key = (tuple(fingerprint(c) for c in chain), _normal_host(hostname), store.id)
    verdict = _CACHE.get(key, now)
    if verdict is not None:
        return verdict
    verdict = verify_chain(chain, hostname, store, now)
    valid_from, valid_until = _stable_window(chain, store)
    if valid_from <= now < valid_until:
        _CACHE.put(key, _Entry(verdict, valid_from, valid_until))
    return verdict


def cache_info() -> CacheInfo:
    return _CACHE.info()


def cache_clear() -> None:
    _CACHE.clear()
    known_clear()


# --------------------------------------------------------------------------
# Expiry tiers
# --------------------------------------------------------------------------
def expiry_tier(days_left: float, expiry_days: Sequence[int]) -> str | None:
    """The most severe tier (EXPIRY_TIERS, paired with expiry_days in order) whose
    threshold days_left is at or under; "outage" once expired; None when clear."""
    if days_left <= 0:
        return EXPIRY_TIERS[-1]
    for tier, threshold in reversed(list(zip(EXPIRY_TIERS, expiry_days))):
        if days_left <= threshold:
            return tier
    return None
