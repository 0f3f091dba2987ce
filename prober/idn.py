"""Names as people type them: Unicode hostnames to the A-labels DNS carries, and back.

UTS #46 mapping (case folding, width) followed by IDNA 2008 (RFC 5891), via the
``idna`` package, as browsers and curl do.  Never Python's built-in ``idna``
codec: it implements IDNA 2003, which maps ``faß.de`` to ``fass.de``, a
different domain.
"""
from __future__ import annotations

import idna


def to_ascii(name: str) -> str:
    """The A-label form of a Unicode name; ValueError with the reason when IDNA 2008 forbids it."""
    try:
        return idna.encode(name, uts46=True, transitional=False).decode("ascii")
    except idna.IDNAError as err:
        raise ValueError(f"is not a valid internationalised name under IDNA 2008: {_reason(err)}") from None
    except UnicodeError as err:
        raise ValueError(f"is not a valid internationalised name: {_reason(err)}") from None


def to_unicode(name: str) -> str:
    """The U-label form for display; the name itself when it holds no valid A-label."""
    if "xn--" not in name:
        return name
    try:
        return idna.decode(name)
    except (idna.IDNAError, UnicodeError):
        return name


def check_a_labels(name: str, shown: str) -> None:
    """ValueError unless every xn-- label of an ASCII name decodes under IDNA 2008."""
    for label in name.split("."):
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError) as err:
                raise ValueError(f"holds {label!r}, which is not a valid IDNA 2008 A-label: {_reason(err)} "
                                 f"(got {shown})") from None


def _reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text[:1].lower() + text[1:200]
