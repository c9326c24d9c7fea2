"""Normalisation of channel names, UTM values and click ids.

Producers write ``FB``, ``facebook`` or ``Facebook.com``; reports need one name per network.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CHANNEL_ALIASES",
    "CLICK_ID_CHANNELS",
    "SOCIAL_CHANNELS",
    "campaign_key",
    "normalise_channel",
]

CHANNEL_ALIASES: Final[dict[str, str]] = {
    "fb": "facebook",
    "facebook.com": "facebook",
    "meta": "facebook",
    "ig": "instagram",
    "insta": "instagram",
    "instagram.com": "instagram",
    "tw": "x",
    "twitter": "x",
    "twitter.com": "x",
    "x.com": "x",
    "li": "linkedin",
    "linkedin.com": "linkedin",
    "yt": "youtube",
    "youtube.com": "youtube",
    "tt": "tiktok",
    "tiktok.com": "tiktok",
    "pin": "pinterest",
    "pinterest.com": "pinterest",
}

SOCIAL_CHANNELS: Final = frozenset(
    {"facebook", "instagram", "x", "linkedin", "youtube", "tiktok", "pinterest", "threads"}
)

# Ad click ids and the network that issues them (names compared in lower case).
CLICK_ID_CHANNELS: Final[dict[str, str]] = {
    "fbclid": "facebook",
    "igshid": "instagram",
    "twclid": "x",
    "li_fat_id": "linkedin",
    "ttclid": "tiktok",
    "epik": "pinterest",
    "gclid": "google",
    "msclkid": "bing",
}


def normalise_channel(name: str) -> str:
    """Lower-case, trimmed, alias-resolved channel name (``"FB "`` -> ``"facebook"``)."""
    key = name.strip().lower()
    if key.startswith("www."):
        key = key[4:]
    return CHANNEL_ALIASES.get(key, key)


def campaign_key(value: str) -> str:
    """The key a campaign id or ``utm_campaign`` tag is compared by: trimmed, lower case.

    One rule on every path (social events, costs, campaign records, UTM tags, attribution):
    ``Camp-E``, ``camp-e`` and ``CAMP-E`` are one campaign, reported under the id its
    campaign record declares (see ``sinks/migrations/0010_campaigns.sql``).
    """
    return value.strip().lower()
