"""The next check to run for each finding, following the outside-in debugging order: name, resolution, TLS, HTTP.

Hints hold no `|`: in a Monitoring Plugins output, a `|` on any line starts performance data.

Tailored by the contract's informational fields (tls_termination,
certificate_source, dns_provider, ingress_controller) where they are set.
"""
from __future__ import annotations

from .model import DnsResult, Endpoint

_DNS_PROVIDER = {
    "route53": "aws route53 list-resource-record-sets --hosted-zone-id <zone-id> --query "
               "\"ResourceRecordSets[?Name=='{host}.']\"",
    "azure-dns": "az network dns record-set a list -g <rg> -z <zone>",
    "azure": "az network dns record-set a list -g <rg> -z <zone>",
    "external-dns": "kubectl logs -n external-dns deploy/external-dns --since=1h (look for {host})",
}
_CERT_SOURCE = {
    "acm": "aws acm describe-certificate --certificate-arn <cert-arn> (check Status, InUseBy, RenewalSummary)",
    "cert-manager": "kubectl get certificate -A -o wide (the one for {host}), then kubectl describe it; "
                    "kubectl get certificaterequest,order,challenge -A",
    "key-vault": "az keyvault certificate show --vault-name <kv> --name <cert>",
    "keyvault": "az keyvault certificate show --vault-name <kv> --name <cert>",
    "lets-encrypt": "kubectl get certificate,challenge -A; check the ACME account and rate limits",
}
_TERMINATION = {
    "aws-alb": "aws elbv2 describe-listeners --load-balancer-arn <alb-arn> (the listener's certificate binding); "
               "aws elbv2 describe-target-health --target-group-arn <tg-arn>",
    "aws-nlb": "aws elbv2 describe-listeners --load-balancer-arn <nlb-arn>",
    "azure-appgw": "az network application-gateway show -g <rg> -n <appgw> (listeners, ssl certificates, backend health)",
    "azure-application-gateway": "az network application-gateway show -g <rg> -n <appgw>",
    "ingress-nginx": "kubectl get ingress -A -o wide (the rule for {host}); "
                     "kubectl logs -n ingress-nginx deploy/ingress-nginx-controller --since=15m",
    "gateway-api": "kubectl get gateway -A; kubectl get httproute -A; kubectl describe gateway <gw>",
    "envoy": "check the envoy listener's filter chain for server_names {host} and its upstream cluster health",
}


_TLS_POLICY = {
    "tls.weak_key": "reissue with an RSA-2048+ or P-256/P-384 key (openssl x509 -noout -text shows the Public-Key size)",
    "tls.weak_signature": "reissue from a CA that signs with SHA-256 or better; replace a SHA-1 intermediate "
                          "with the CA's current one",
    "tls.profile_violation": "reissue the CA certificate with basicConstraints critical and a keyIdentifier AKI "
                             "(openssl x509 -noout -text shows both)",
    "tls.revoked": "deploy a newly issued certificate (new key if the reason is keyCompromise) and reload",
    "tls.revocation_unknown": "fetch the CRL or OCSP URL from the certificate by hand; check egress to the CA",
    "tls.weak_cipher": "offer ECDHE with AES-GCM or ChaCha20 only (Mozilla intermediate); openssl s_client "
                       "-tls1_2 -cipher 'kRSA:SHA1:@SECLEVEL=0' shows what is still accepted",
    "tls.weak_dh": "drop the DH parameters or use a 2048-bit group (RFC 7919 ffdhe2048); openssl s_client "
                   "-tls1_2 -cipher kDHE shows the Server Temp Key",
    "tls.client_cert_required": "set tls.client_cert {cert_file, key_file} to a certificate the endpoint accepts",
}


def _split(server: str) -> tuple[str, int | None]:
    """'ADDR:PORT' or '[v6]:PORT' -> (ADDR, PORT); a bare name or address -> (it, None)."""
    if server.startswith("["):
        addr, _, port = server[1:].partition("]:")
        return addr, int(port) if port.isdigit() else None
    addr, sep, port = server.rpartition(":")
    if sep and port.isdigit() and ":" not in addr:
        return addr, int(port)
    return server, None


def dig_at(server: str, host: str, norecurse: bool = False) -> str:
    """`dig @ADDR [-p PORT] host`: the server by its address, so the command runs as pasted."""
    addr, port = _split(server)
    return (f"dig @{addr}{f' -p {port}' if port and port != 53 else ''} {host}"
            + (" +norecurse" if norecurse else ""))


def _zone(host: str, dns: DnsResult | None) -> str:
    if dns is not None and dns.zone:
        return dns.zone
    return host.split(".", 1)[1] if host.count(".") >= 2 else host


def _authoritative(host: str, dns: DnsResult | None) -> str:
    auth = dns.authoritative[0].server if dns is not None and dns.authoritative else None
    if auth:
        return dig_at(auth, host, norecurse=True)
    return f"dig +trace {host}"


def _resolver(dns: DnsResult | None, name: str | None) -> str | None:
    """The server of the resolver named `name`, else the first resolver's."""
    if dns is None or not dns.resolvers:
        return None
    return next((a.server for a in dns.resolvers if a.resolver == name), dns.resolvers[0].server)


def _dig(host: str, dns: DnsResult | None = None, about: str | None = None) -> str:
    server = _resolver(dns, about)
    zone = _zone(host, dns)
    if server is None:
        return f"dig {host}; dig NS {zone}; {_authoritative(host, dns)}"
    return f"{dig_at(server, host)}; {dig_at(server, f'NS {zone}')}; {_authoritative(host, dns)}"


def _dial(endpoint: Endpoint, address: str | None) -> str | None:
    """The address the finding is about (or connect_to): dialled directly, whatever DNS says."""
    if address:
        return _split(address)[0]
    return endpoint.connect_to


def _openssl(host: str, port: int, dial: str | None = None, ca_file: str | None = None) -> str:
    target = (f"[{dial}]" if ":" in dial else dial) if dial else host
    ca = f" -CAfile {ca_file}" if ca_file else ""
    return f"openssl s_client -connect {target}:{port} -servername {host}{ca} -showcerts </dev/null"


def _curl(host: str, port: int, path: str = "/", dial: str | None = None, scheme: str = "https",
          ca_file: str | None = None) -> str:
    default = 443 if scheme == "https" else 80
    origin = host if port == default else f"{host}:{port}"
    resolve = f" --resolve {host}:{port}:{f'[{dial}]' if ':' in dial else dial}" if dial else ""
    ca = f" --cacert {ca_file}" if ca_file and scheme == "https" else ""
    return f"curl -sv -o /dev/null{resolve}{ca} {scheme}://{origin}{path}"


def _lookup(table: dict[str, str], key: str | None, host: str) -> str | None:
    if not key:
        return None
    text = table.get(key.lower())
    return text.format(host=host) if text else None


def stale_hint(hostname: str, dns: DnsResult, names: list[str]) -> str:
    """For a failure at an address only stale resolvers still hand out."""
    digs = "; ".join(dig_at(s, hostname) for s in (_resolver(dns, n) for n in names) if s)
    return (f"{digs or f'dig {hostname}'} and compare with {_authoritative(hostname, dns)}; "
            "wait for the TTL or flush that resolver's cache")


def hint_for(code: str, endpoint: Endpoint, address: str | None = None, dns: DnsResult | None = None) -> str:
    """The next command to run; `address` is what the finding is about (ADDR:PORT or a resolver's name)."""
    host = endpoint.hostname
    port = endpoint.tls.port
    layer = code.split(".", 1)[0]
    if layer == "dns":
        return _dns_hint(code, endpoint, address, dns)
    if layer == "tls":
        base = _openssl(host, port, _dial(endpoint, address), endpoint.ca_file)
        if code in ("tls.expired", "tls.expiring", "tls.unexpected_issuer", "tls.untrusted",
                    "tls.incomplete_chain", "tls.renewal_overdue"):
            extra = _lookup(_CERT_SOURCE, endpoint.certificate_source, host)
        else:
            extra = None
        extra = extra or _lookup(_TERMINATION, endpoint.tls_termination, host)
        if code == "tls.incomplete_chain" and not extra:
            extra = "serve the full chain (leaf + intermediates): e.g. nginx ssl_certificate must point at the fullchain file"
        if code == "tls.hostname_mismatch" and not extra:
            extra = "check which certificate the listener binds for this SNI name"
        extra = extra or _TLS_POLICY.get(code)
        return f"{base}; {extra}" if extra else base
    dial = _dial(endpoint, address)
    if code in ("http.health_failed", "http.waf_blocked", "http.missing_hsts"):
        curl = _curl(host, port, endpoint.http.health_path, dial, ca_file=endpoint.ca_file)
        if code == "http.waf_blocked":
            return (f"{curl}; the block page came from the WAF in front of the application: find the rule "
                    "that matched this request in the WAF's logs (the block page's request or reference id "
                    "names it) and exempt the probe's source address or User-Agent (prober/0.1)")
        if code == "http.missing_hsts":
            return (f"{curl.replace('curl -sv -o', 'curl -s -D - -o')}: look for Strict-Transport-Security; "
                    "add it at the listener that terminates TLS, on every response (nginx: add_header ... always)")
        extra = _lookup(_TERMINATION, endpoint.tls_termination, host) or (
            "then check the backends behind the listener: on Kubernetes, the Service's EndpointSlices and "
            "whether its pods are Ready")
        return f"{curl}; {extra}"
    curl = _curl(host, endpoint.http.port, "/", dial, scheme="http")
    return f"{curl} (check the listener's http->https redirect rule)"


# What sits behind the answers: DNSSEC, dangling CNAMEs, the delegation and the zone's servers.
_DEPTH_HINTS = {
    "dns.dangling_cname": "dig {host} +trace; delete the CNAME or re-create its target at the provider now "
                          "(anyone can claim a deleted resource name)",
    "dns.dnssec_bogus": "dig +dnssec {host}; dig +dnssec +cd {host}; dig +dnssec DNSKEY <zone> "
                        "@<authoritative-ns> +norecurse: re-sign the zone or fix the DS at the parent",
    "dns.rrsig_expiring": "dig +dnssec DNSKEY <zone> @<authoritative-ns> +norecurse; check that the signer "
                          "(knot/bind auto-signing, the provider's signing job) is running",
    "dns.dnssec_missing": "dig +dnssec {host}; dig DS <zone> @<parent-ns> +norecurse: sign the zone and "
                          "publish its DS",
    "dns.delegation_mismatch": "dig NS <zone> @<parent-ns> +norecurse; dig NS <zone> @<authoritative-ns> "
                               "+norecurse: make the registrar's NS set match the zone's",
    "dns.lame_delegation": "dig SOA <zone> @<that-ns> +norecurse: serve the zone there, or remove the server "
                           "from the NS set and the delegation",
    "dns.serial_drift": "dig SOA <zone> @<each-ns> +norecurse; repair the transfer to the server that is "
                        "behind (NOTIFY, allow-transfer, TSIG), then retransfer",
}


def _dns_hint(code: str, endpoint: Endpoint, about: str | None, dns: DnsResult | None) -> str:
    host = endpoint.hostname
    at = _resolver(dns, about)
    each = "; ".join(dig_at(a.server, host) for a in dns.resolvers) if dns is not None and dns.resolvers else ""
    base = {
        "dns.stale_resolver": f"{_dig(host, dns, about)}: compare the TTL left at the stale resolver; "
                              "it will expire on its own, or flush that resolver's cache",
        "dns.inconsistent": f"{each or f'dig {host}'}; then {_authoritative(host, dns)}",
        "dns.private_address": f"{dig_at(at, host) if at else f'dig {host}'}; inspect the load balancer scheme "
                               "(internal vs internet-facing) and which zone (private/public) holds the record",
        "dns.publicly_resolvable": "delete or patch the public record now; check the ingress class and "
                                   "the public-zone annotation",
        "dns.caa_forbids_issuer": f"dig CAA {host}; dig CAA <each parent of {host}>; add an issue (or issuewild) "
                                  "record for the CA's identity at the name the finding names",
        **_DEPTH_HINTS,
    }.get(code) or _dig(host, dns, about)
    base = base.replace("{host}", host).replace("<zone>", dns.zone if dns is not None and dns.zone else "<zone>")
    extra = _lookup(_DNS_PROVIDER, endpoint.dns_provider, host)
    if extra and dns is not None and dns.zone:
        extra = extra.replace("<zone>", dns.zone)
    return f"{base}; {extra}" if extra else base
