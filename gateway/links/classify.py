"""Who followed a link: a person, or a machine that fetched it on its own.

A message's link is fetched by more than the patient: messaging apps draw a preview
(Slack, WhatsApp, iMessage, which sends `facebookexternalhit ... Twitterbot`), search
and page-render bots (Twilio's own example click is `Google-PageRenderer`), mail and
SMS security scanners (Safe Links, Proofpoint, Mimecast), browsers prefetching, and
scripts. Only a `human` click counts as a person; every class is recorded, so a
report can show both. The order of `CLASSES` is the order of the checks: a HEAD or a
prefetch is never a person whatever its agent says. Agents that pretend to be a
browser cannot be told from one by their headers; the per-source rate limit
(gateway/links/server.py) keeps them from inflating the count.

clinical.md §D also suggests discounting a known preview agent's first hit soon after
delivery: every hit from a known preview agent is discounted here, which covers it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

HUMAN = "human"


@dataclass(frozen=True, slots=True)
class Click:
    agent_class: str
    human: bool


_PREVIEW = re.compile(
    r"slackbot|slack-imgproxy|facebookexternalhit|facebot|whatsapp|twitterbot|telegrambot"
    r"|discordbot|linkedinbot|skypeuripreview|viber|snapchat|pinterest|redditbot"
    r"|embedly|iframely|applebot|imessage|google-pagerenderer|googleimageproxy"
    r"|google-read-aloud|bingpreview|microsoftpreview|outlook-ios-linkpreview",
    re.IGNORECASE,
)
_CRAWLER = re.compile(
    r"googlebot|adsbot-google|mediapartners-google|apis-google|google-inspectiontool"
    r"|feedfetcher-google|bingbot|msnbot|adidxbot|duckduckbot|yandex|baiduspider|slurp"
    r"|petalbot|semrushbot|ahrefsbot|mj12bot|bot/|crawler|spider",
    re.IGNORECASE,
)
_SCANNER = re.compile(
    r"safelinks|safe links|proofpoint|mimecast|barracuda|urldefense|forcepoint|zscaler"
    r"|symantec|messagelabs|trend ?micro|sophos|fireeye|paloalto|cisco|ironport|checkpoint"
    r"|virustotal|urlscan|phishtank|netcraft|scanner",
    re.IGNORECASE,
)
_TOOL = re.compile(
    r"^(?:curl|wget|python|go-http-client|java/|okhttp|libwww|lwp|httpie|axios|node-fetch"
    r"|undici|ruby|php|aiohttp|httpx|apache-httpclient|postman|insomnia)"
    r"|headlesschrome|phantomjs|puppeteer|playwright|selenium",
    re.IGNORECASE,
)
_PREFETCH_HEADERS = ("Purpose", "Sec-Purpose", "X-Purpose", "X-Moz")
CLASSES = ("head", "prefetch", "empty", "preview", "scanner", "crawler", "tool", HUMAN)


def classify(method: str, headers: Mapping[str, str]) -> Click:
    """The class of one request to a short link."""
    if method == "HEAD":
        return Click("head", False)
    for name in _PREFETCH_HEADERS:
        value = headers.get(name, "").lower()
        if "prefetch" in value or "preview" in value or "prerender" in value:
            return Click("prefetch", False)
    agent = headers.get("User-Agent", "").strip()
    if not agent:
        return Click("empty", False)
    for name, pattern in (
        ("preview", _PREVIEW),
        ("scanner", _SCANNER),
        ("crawler", _CRAWLER),
        ("tool", _TOOL),
    ):
        if pattern.search(agent):
            return Click(name, False)
    return Click(HUMAN, True)
