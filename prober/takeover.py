"""Provider suffixes where whoever creates the missing target name gets it: a dangling CNAME there is a takeover.

Source: the community list "Can I take over XYZ?" (github.com/EdOverflow/can-i-take-over-xyz,
fingerprints.json, entries marked vulnerable), cross-checked against each provider's own
documentation on custom domains.  Only providers whose resource names are first come, first
served and reachable through a CNAME are listed; a provider that verifies domain ownership
before binding a custom hostname is left out.  One suffix per line, matched on label
boundaries; add new ones here, nowhere else.
"""
from __future__ import annotations

# suffix -> the provider, as a person reading an alert would name it
TAKEOVER_SUFFIXES: dict[str, str] = {
    "azurewebsites.net": "Azure App Service",
    "cloudapp.net": "Azure Cloud Services (CloudApp)",
    "cloudapp.azure.com": "Azure CloudApp (public IP DNS label)",
    "trafficmanager.net": "Azure Traffic Manager",
    "blob.core.windows.net": "Azure Blob Storage",
    "azureedge.net": "Azure CDN",
    "azure-api.net": "Azure API Management",
    "s3.amazonaws.com": "AWS S3",
    "elasticbeanstalk.com": "AWS Elastic Beanstalk",
    "herokuapp.com": "Heroku",
    "herokudns.com": "Heroku",
    "github.io": "GitHub Pages",
    "ghost.io": "Ghost",
    "myshopify.com": "Shopify",
    "surge.sh": "Surge.sh",
    "bitbucket.io": "Bitbucket",
    "netlify.app": "Netlify",
    "pantheonsite.io": "Pantheon",
    "readthedocs.io": "Read the Docs",
    "wordpress.com": "WordPress.com",
    "fly.dev": "Fly.io",
}
# Regional S3 website endpoints: BUCKET.s3-website-REGION.amazonaws.com or BUCKET.s3-website.REGION.amazonaws.com


def provider_for(target: str) -> str | None:
    """The provider whose namespace holds `target` (lower case, no trailing dot), or None."""
    labels = target.split(".")
    for i in range(len(labels)):
        provider = TAKEOVER_SUFFIXES.get(".".join(labels[i:]))
        if provider:
            return provider
    if target.endswith(".amazonaws.com") and any(label == "s3-website" or label.startswith("s3-website-")
                                                   for label in labels):
        return "an AWS S3 website endpoint"
    return None
