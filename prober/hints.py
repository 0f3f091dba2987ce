"""The next check to run for each finding, following the outside-in debugging order: name, resolution, TLS, HTTP.

Tailored by the contract's informational fields (tls_termination,
certificate_source, dns_provider, ingress_controller) where they are set.
"""
from __future__ import annotations

from .model import Endpoint

_DNS_PROVIDER = {
    "route53": "aws route53 list-resource-record-sets --hosted-zone-id <zone-id> --query "
               "\"ResourceRecordSets[?Name=='{host}.']\"",
    "azure-dns": "az network dns record-set a list -g <rg> -z <zone>",
    "azure": "az network dns record-set a list -g <rg> -z <zone>",
    "external-dns": "kubectl logs -n external-dns deploy/external-dns | grep {host}",
}
_CERT_SOURCE = {
    "acm": "aws acm describe-certificate --certificate-arn <cert-arn> (check Status, InUseBy, RenewalSummary)",
    "cert-manager": "kubectl describe certificate -A | grep -B5 -A20 {host}; "
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
    "ingress-nginx": "kubectl describe ingress -A | grep -B3 -A15 {host}; kubectl logs -n ingress-nginx deploy/ingress-nginx-controller",
    "gateway-api": "kubectl get gateway -A; kubectl get httproute -A; kubectl describe gateway <gw>",
    "envoy": "check the envoy listener's filter chain for server_names {host} and its upstream cluster health",
}


_TLS_POLICY = {
    "tls.weak_key": "reissue with an RSA-2048+ or P-256/P-384 key (openssl x509 -noout -text | grep Public-Key)",
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


def _dig(host: str) -> str:
    return f"dig {host}; dig NS <zone>; dig @<authoritative-ns> {host} +norecurse"


def _openssl(host: str, port: int) -> str:
    return f"openssl s_client -connect {host}:{port} -servername {host} -showcerts </dev/null"


def _curl(host: str, path: str = "/") -> str:
    return f"curl -sv -o /dev/null https://{host}{path}"


def _lookup(table: dict[str, str], key: str | None, host: str) -> str | None:
    if not key:
        return None
    text = table.get(key.lower())
    return text.format(host=host) if text else None


def hint_for(code: str, endpoint: Endpoint) -> str:
    host = endpoint.hostname
    port = endpoint.tls.port
    layer = code.split(".", 1)[0]
    if layer == "dns":
        base = {
            "dns.stale_resolver": f"{_dig(host)}: compare the TTL left at the stale resolver; "
                                  "it will expire on its own, or flush that resolver's cache",
            "dns.inconsistent": f"dig @<each resolver> {host}; then dig @<authoritative-ns> {host} +norecurse",
            "dns.private_address": f"dig @<public resolver> {host}; inspect the load balancer scheme "
                                   "(internal vs internet-facing) and which zone (private/public) holds the record",
            "dns.publicly_resolvable": "delete or patch the public record now; check the ingress class and "
                                       "the public-zone annotation",
        }.get(code, _dig(host))
        extra = _lookup(_DNS_PROVIDER, endpoint.dns_provider, host)
        return f"{base}; {extra}" if extra else base
    if layer == "tls":
        base = _openssl(host, port)
        if code in ("tls.expired", "tls.expiring", "tls.unexpected_issuer", "tls.untrusted",
                    "tls.incomplete_chain"):
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
    if code == "http.health_failed":
        extra = _lookup(_TERMINATION, endpoint.tls_termination, host) or (
            "kubectl get endpointslice -n <ns> -l kubernetes.io/service-name=<svc>; kubectl get pods -n <ns>")
        return f"{_curl(host, endpoint.http.health_path)}; {extra}"
    return f"curl -sv -o /dev/null http://{host}/ (check the listener's http->https redirect rule)"
