"""E.164 normalisation of phone numbers typed by operators or found in resident lists.

Used to deduplicate recipients: ``+8613800138000``, ``008613800138000``,
``86 138-0013-8000`` and ``13800138000`` are the same resident.
"""

from __future__ import annotations

import unicodedata

from .errors import MsisdnError

# ITU-T E.164: at most 15 digits including the country code.
E164_MAX_DIGITS = 15
E164_MIN_DIGITS = 8
# Characters people put inside numbers for readability.
_SEPARATORS = frozenset(" -.()/\u00a0\t")
# National significant number lengths where the country has a fixed plan; used
# to recognise numbers written with the country code but without "+" or "00".
_NATIONAL_LENGTHS = {"86": (11,), "852": (8,), "853": (8,), "886": (9,), "1": (10,)}


def _digits_only(raw: str) -> tuple[bool, str]:
    """Return (had a leading '+', digits) after NFKC (full-width digits) and separators."""
    text = unicodedata.normalize("NFKC", raw).strip()
    if len(text) > 40:
        raise MsisdnError(raw, "longer than 40 characters")
    text = text.lstrip("( ")  # "(+86) 138..." writes the prefix inside parentheses
    plus = text.startswith("+")
    if plus:
        text = text[1:]
    text = text.replace("(0)", "")  # "+86 (0)10 ..." style trunk-prefix hint
    digits = []
    for ch in text:
        if ch in _SEPARATORS:
            continue
        if not ("0" <= ch <= "9"):
            raise MsisdnError(raw, f"unexpected character {ch!r}")
        digits.append(ch)
    return plus, "".join(digits)


def normalise_msisdn(raw: str, default_country: str = "86") -> str:
    """Return ``raw`` as E.164 (``+`` and digits), or raise :class:`MsisdnError`.

    ``+`` or ``00`` prefixes mark an international number; a single leading
    ``0`` is the national trunk prefix and is replaced by ``default_country``;
    a number that starts with ``default_country`` and is exactly that long
    plus a known national length is taken as already international; anything
    else is a national number in ``default_country``.
    """
    if not default_country.isdigit() or not 1 <= len(default_country) <= 3 \
            or default_country.startswith("0"):
        raise MsisdnError(raw, f"bad default country code {default_country!r}")
    plus, digits = _digits_only(raw)
    if not digits:
        raise MsisdnError(raw, "no digits")
    if plus:
        full = digits
    elif digits.startswith("00"):
        full = digits[2:]
    elif digits.startswith("0"):
        full = default_country + digits[1:]
    elif digits.startswith(default_country) and (len(digits) - len(default_country)) in \
            _NATIONAL_LENGTHS.get(default_country, ()):
        full = digits
    else:
        full = default_country + digits
    if full.startswith("0"):
        raise MsisdnError(raw, "country code cannot start with 0")
    if not E164_MIN_DIGITS <= len(full) <= E164_MAX_DIGITS:
        raise MsisdnError(raw, f"{len(full)} digits; E.164 allows {E164_MIN_DIGITS}-"
                               f"{E164_MAX_DIGITS}")
    # Chinese mobile numbers are 1[3-9] plus 9 digits; area code 10 (Beijing) is not one.
    if full[:3] == "861" and full[3:4] in set("3456789") and len(full) != 13:
        raise MsisdnError(raw, "a Chinese mobile number has 11 digits after +86")
    return "+" + full
