"""How much a secret token could be guessed: a conservative entropy estimate.

The estimate is length × log2(size of the character classes the token uses:
lower case, upper case, digits, other printable symbols), which is what a
guesser who knows the classes has to cover. A token built from a repeated unit
(`abcabcabc...`) or made of a few characters over and over gets no credit.
`secrets.token_urlsafe(32)` scores about 258 bits, `secrets.token_hex(32)` 330.
"""

from __future__ import annotations

import math
import string
from collections import Counter

MIN_TOKEN_BITS = 128
"""What production requires of its admin token and API key."""

_CLASSES = (
    (set(string.ascii_lowercase), 26),
    (set(string.ascii_uppercase), 26),
    (set(string.digits), 10),
)
_OTHER_PRINTABLE = 32
#: Below this many bits per character of the token's own character frequencies
#: (random hex has about 3.7, `aaaaaaab...` well under 1) the token is refused.
_MIN_BITS_PER_CHARACTER = 2.5


def _is_periodic(token: str) -> bool:
    """True when the token is a shorter unit repeated (`abab`, `aaaa`)."""
    return len(token) > 1 and (token + token).find(token, 1) < len(token)


def _shannon_bits_per_character(token: str) -> float:
    n = len(token)
    return -sum(c / n * math.log2(c / n) for c in Counter(token).values())


def estimated_bits(token: str) -> float:
    """Entropy estimate in bits; 0 for a repeated or one-character-heavy token."""
    if not token or _is_periodic(token):
        return 0.0
    if _shannon_bits_per_character(token) < _MIN_BITS_PER_CHARACTER:
        return 0.0
    chars = set(token)
    alphabet = sum(size for members, size in _CLASSES if chars & members)
    if chars - set().union(*(members for members, _ in _CLASSES)):
        alphabet += _OTHER_PRINTABLE
    return len(token) * math.log2(alphabet)


def strong_enough(token: str) -> bool:
    return estimated_bits(token) >= MIN_TOKEN_BITS
