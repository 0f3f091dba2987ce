"""What Kubernetes objects say about an endpoint: the annotation and class -> contract key table.

One table per kind of fact, each entry with the controller documentation it follows.
`prober discover` (prober/discover.py) reads only these; docs/discover.md describes the
same mapping for people.
"""
from __future__ import annotations

# ExternalDNS: both prefixes (external-dns.kubernetes.io/ is its default since 2026; the
# alpha one is what older manifests carry).  Source: ExternalDNS docs, "Annotations".
EXTERNAL_DNS_PREFIXES: tuple[str, ...] = ("external-dns.alpha.kubernetes.io/", "external-dns.kubernetes.io/")

# Annotations that add hostnames to an Ingress (comma-separated values).
# AGIC's hostname-extension: AGIC docs, "Annotations" (hostname-extension).
INGRESS_HOSTNAME_ANNOTATIONS: tuple[str, ...] = (
    *(p + "hostname" for p in EXTERNAL_DNS_PREFIXES),
    "appgw.ingress.kubernetes.io/hostname-extension",
)
SERVICE_HOSTNAME_ANNOTATIONS: tuple[str, ...] = tuple(p + "hostname" for p in EXTERNAL_DNS_PREFIXES)
TARGET_ANNOTATIONS: tuple[str, ...] = tuple(p + "target" for p in EXTERNAL_DNS_PREFIXES)

# visibility: annotation -> {value: visibility}; "*" matches any other non-empty value.
# The first annotation of the list present on an object decides.
#  - alb.ingress.kubernetes.io/scheme: AWS Load Balancer Controller, Ingress annotations.
#  - service.beta.kubernetes.io/aws-load-balancer-scheme: AWS LBC, Service annotations; it takes
#    precedence over the deprecated -internal annotation.
#  - service.beta.kubernetes.io/aws-load-balancer-internal: the in-tree AWS cloud provider reads
#    "false" as internet-facing and any other non-empty value (also a CIDR) as internal.
#  - service.beta.kubernetes.io/azure-load-balancer-internal: cloud-provider-azure, "true" = internal.
#  - appgw.ingress.kubernetes.io/use-private-ip: AGIC annotations, "true" = the private frontend IP.
LBC_SCHEMES: dict[str, str] = {"internal": "private", "internet-facing": "public"}
VISIBILITY_ANNOTATIONS: tuple[tuple[str, dict[str, str]], ...] = (
    ("alb.ingress.kubernetes.io/scheme", LBC_SCHEMES),
    ("service.beta.kubernetes.io/aws-load-balancer-scheme", LBC_SCHEMES),
    ("service.beta.kubernetes.io/aws-load-balancer-internal", {"false": "public", "*": "private"}),
    ("service.beta.kubernetes.io/azure-load-balancer-internal", {"true": "private", "false": "public"}),
    ("appgw.ingress.kubernetes.io/use-private-ip", {"true": "private", "false": "public"}),
)

# certificate_source: annotation present (any non-empty value) -> source.
#  - alb.ingress.kubernetes.io/certificate-arn: AWS LBC Ingress annotations (an ACM ARN).
#  - service.beta.kubernetes.io/aws-load-balancer-ssl-cert: AWS LBC Service annotations (ACM).
#  - appgw.ingress.kubernetes.io/appgw-ssl-certificate: AGIC, a certificate installed on the
#    Application Gateway from Key Vault.
#  - cert-manager.io/issuer, cert-manager.io/cluster-issuer: cert-manager ingress-shim and
#    gateway-shim (Ingress: the hosts of spec.tls; Gateway: HTTPS listeners in Terminate mode).
INGRESS_CERTIFICATE_ANNOTATIONS: tuple[tuple[str, str], ...] = (
    ("alb.ingress.kubernetes.io/certificate-arn", "acm"),
    ("appgw.ingress.kubernetes.io/appgw-ssl-certificate", "key-vault"),
)
SERVICE_CERTIFICATE_ANNOTATIONS: tuple[tuple[str, str], ...] = (
    ("service.beta.kubernetes.io/aws-load-balancer-ssl-cert", "acm"),
)
CERT_MANAGER_ANNOTATIONS: tuple[str, ...] = ("cert-manager.io/issuer", "cert-manager.io/cluster-issuer")

# http.health_path.  AWS LBC Ingress annotations (healthcheck-path); AGIC (health-probe-path).
HEALTH_PATH_ANNOTATIONS: tuple[str, ...] = (
    "alb.ingress.kubernetes.io/healthcheck-path",
    "appgw.ingress.kubernetes.io/health-probe-path",
)

# The legacy class annotation, read when spec.ingressClassName is absent.
INGRESS_CLASS_ANNOTATION = "kubernetes.io/ingress.class"


# Ingress classes whose controller we know: the tls_termination name, and the visibility the
# controller documents as its default when no annotation decides (None: no documented default).
#  - alb: AWS LBC, "alb.ingress.kubernetes.io/scheme ... default internal".
#  - nginx: ingress-nginx; the load balancer's scheme is the controller Service's, not the Ingress's.
#  - azure-application-gateway (and the annotation value azure/application-gateway): AGIC,
#    "use-private-ip ... default false" (the public frontend IP).
INGRESS_CLASSES: dict[str, tuple[str, str | None]] = {
    "alb": ("aws-alb", "private"),
    "nginx": ("ingress-nginx", None),
    "azure-application-gateway": ("azure-application-gateway", "public"),
    "azure/application-gateway": ("azure-application-gateway", "public"),
}

# IngressClass spec.controller -> the INGRESS_CLASSES entry it behaves as, for classes named
# otherwise (AWS LBC "IngressClass": ingress.k8s.aws/alb; ingress-nginx: k8s.io/ingress-nginx;
# AGIC: azure/application-gateway).
INGRESS_CONTROLLERS: dict[str, str] = {
    "ingress.k8s.aws/alb": "alb",
    "k8s.io/ingress-nginx": "nginx",
    "azure/application-gateway": "azure-application-gateway",
}
# AWS LBC IngressClassParams (group elbv2.k8s.aws): its spec.scheme, when set, is the scheme of
# every Ingress of the IngressClass that references it; the annotation is then not read.
LBC_PARAMS_GROUP = "elbv2.k8s.aws"

# A Service of type LoadBalancer reconciled by the AWS LBC gets an internal NLB unless
# aws-load-balancer-scheme says otherwise (AWS LBC "Network Load Balancer": "secure by default,
# the LBC provisions an internal NLB").  The LBC takes a Service when its loadBalancerClass is
# service.k8s.aws/nlb, or its aws-load-balancer-type is "external" or "nlb-ip".
LBC_SERVICE_CLASS = "service.k8s.aws/nlb"
LBC_SERVICE_TYPE_ANNOTATION = "service.beta.kubernetes.io/aws-load-balancer-type"
LBC_SERVICE_TYPES: frozenset[str] = frozenset({"external", "nlb-ip"})
LBC_SERVICE_DEFAULT_VISIBILITY = "private"
# An NLB with a certificate terminates TLS itself (AWS LBC, aws-load-balancer-ssl-cert).
NLB_TLS_TERMINATION = "aws-nlb"

# Gateway API: which listener protocols a route kind attaches to (Gateway API spec,
# "Route types" and listener protocol compatibility).
ROUTE_PROTOCOLS: dict[str, frozenset[str]] = {
    "HTTPRoute": frozenset({"HTTP", "HTTPS"}),
    "GRPCRoute": frozenset({"HTTP", "HTTPS"}),
    "TLSRoute": frozenset({"TLS"}),
}
# TLS passed through a Gateway listener terminates at the backend.
PASSTHROUGH_TLS_TERMINATION = "backend"
