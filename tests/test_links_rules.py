"""Tracked links, the parts with no I/O: tokens, the destination allowlist, the click
classification, the `{link:NAME}` placeholder in bodies and templates, the config."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ConfigError, from_mapping
from gateway.errors import ApiError
from gateway.links import tokens
from gateway.links.allowlist import Allowlist
from gateway.links.classify import classify
from gateway.links.placeholders import LinkBook, NamedLink
from gateway.links.settings import LinksConfig
from gateway.templates import language

ALLOW = Allowlist.parse(
    ("www.example-hospital.org", "*.clinics.example.org", "https://portal.example.org/flu/")
)


# -- tokens --------------------------------------------------------------------------


@given(st.integers(tokens.MIN_LENGTH, tokens.MAX_LENGTH))
def test_a_token_is_its_length_of_base62_and_never_repeats(length: int) -> None:
    minted = [tokens.mint(length) for _ in range(200)]
    assert all(tokens.TOKEN.match(t) and len(t) == length for t in minted)
    assert len(set(minted)) == len(minted)
    assert len({tokens.token_hash(t) for t in minted}) == len(minted)


@pytest.mark.parametrize("length", [0, 9, 33])
def test_a_short_or_overlong_token_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="10 to 32"):
        tokens.mint(length)


def test_tokens_use_the_whole_alphabet() -> None:
    seen = set("".join(tokens.mint(32) for _ in range(200)))
    assert seen == set(tokens.ALPHABET)


# -- the allowlist -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://www.example-hospital.org/",
        "https://www.example-hospital.org",
        "https://WWW.Example-Hospital.org/flu?clinic=3#when",
        "https://www.example-hospital.org:443/a/b",
        "https://north.clinics.example.org/hours",
        "https://portal.example.org/flu/",
        "https://portal.example.org/flu",
        "https://portal.example.org/flu/2026/sign-up",
    ],
)
def test_allowed_destinations(url: str) -> None:
    assert ALLOW.problem(url) is None


@pytest.mark.parametrize(
    "url",
    [
        "//evil.example.net/",  # scheme-relative
        "/flu",  # relative
        "http://www.example-hospital.org/",  # a bare host allows https only
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://www.example-hospital.org/",
        "https://www.example-hospital.org@evil.example.net/",  # userinfo
        "https://user:pw@www.example-hospital.org/",
        "https://evil.example.net#@www.example-hospital.org/",
        "https://evil.example.net\\@www.example-hospital.org/",
        "https://www.example-hospital.org\\.evil.example.net/",
        "https://www.example-hospital.org.evil.example.net/",
        "https://evilwww.example-hospital.org/",
        "https://www.ex\u0430mple-hospital.org/",  # a Cyrillic a: another host
        "https://www.example-hospital.org:8443/",  # another port
        "https://clinics.example.org/",  # *.clinics allows subdomains, not the apex
        "https://portal.example.org/fluff",  # prefix is /flu/, not /flu
        "https://portal.example.org/flu/../admin",  # path traversal
        "https://portal.example.org/flu/%2e%2e/admin",
        "https://portal.example.org/flu/%2E%2E%2Fadmin",
        "https://portal.example.org/flu//evil.example.net",
        "https://portal.example.org/",
        "https:///www.example-hospital.org/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://www.example-hospital.org/ a",
        "https://www.example-hospital.org/\nSet-Cookie:x",
        "https://" + "a" * 2100 + ".org/",
        "",
    ],
)
def test_refused_destinations(url: str) -> None:
    problem = ALLOW.problem(url)
    assert problem is not None
    assert url not in problem or not url


def test_an_idn_host_is_compared_and_stored_in_its_ascii_form() -> None:
    allow = Allowlist.parse(("bücher.example",))
    assert allow.problem("https://BÜCHER.example/x") is None
    assert allow.normalised("https://BÜCHER.example/x") == "https://xn--bcher-kva.example/x"
    assert Allowlist.parse(("xn--bcher-kva.example",)).problem("https://bücher.example/") is None


def test_a_url_prefix_rule_keeps_its_scheme_and_port() -> None:
    allow = Allowlist.parse(("http://intranet.example.org:8080/leaflets/",))
    assert allow.problem("http://intranet.example.org:8080/leaflets/a.pdf") is None
    assert allow.problem("https://intranet.example.org:8080/leaflets/a.pdf") is not None
    assert allow.problem("http://intranet.example.org/leaflets/a.pdf") is not None


# -- classification ------------------------------------------------------------------

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36"
)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"User-Agent": IPHONE}, "human"),
        ("GET", {"User-Agent": ANDROID}, "human"),
        ("HEAD", {"User-Agent": IPHONE}, "head"),
        ("GET", {"User-Agent": ANDROID, "Sec-Purpose": "prefetch"}, "prefetch"),
        ("GET", {"User-Agent": ANDROID, "Sec-Purpose": "prefetch;prerender"}, "prefetch"),
        ("GET", {"User-Agent": ANDROID, "Purpose": "prefetch"}, "prefetch"),
        ("GET", {"User-Agent": IPHONE, "X-Moz": "prefetch"}, "prefetch"),
        ("GET", {"User-Agent": IPHONE, "X-Purpose": "preview"}, "prefetch"),
        ("GET", {}, "empty"),
        ("GET", {"User-Agent": "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)"},
         "preview"),
        ("GET", {"User-Agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"}, "preview"),
        ("GET", {"User-Agent": "WhatsApp/2.23.20.0 A"}, "preview"),
        ("GET", {"User-Agent": "Twitterbot/1.0"}, "preview"),
        ("GET", {"User-Agent": "TelegramBot (like TwitterBot)"}, "preview"),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; Google-PageRenderer Google"
                 " (+https://developers.google.com/+/web/snippet/))"}, "preview"),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1;"
                 " +http://www.google.com/bot.html)"}, "crawler"),
        ("GET", {"User-Agent": "Mozilla/5.0 (compatible; bingbot/2.0;"
                 " +http://www.bing.com/bingbot.htm)"}, "crawler"),
        ("GET", {"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) BingPreview/1.0b"},
         "preview"),
        ("GET", {"User-Agent": "Mozilla/5.0 Proofpoint URL Defense"}, "scanner"),
        ("GET", {"User-Agent": "Mimecast Link Scanner"}, "scanner"),
        ("GET", {"User-Agent": "Microsoft Office SafeLinks"}, "scanner"),
        ("GET", {"User-Agent": "curl/8.5.0"}, "tool"),
        ("GET", {"User-Agent": "python-requests/2.32"}, "tool"),
        ("GET", {"User-Agent": "Go-http-client/1.1"}, "tool"),
        ("GET", {"User-Agent": "Mozilla/5.0 HeadlessChrome/124.0"}, "tool"),
    ],
)  # fmt: skip
def test_classification(method: str, headers: dict[str, str], expected: str) -> None:
    click = classify(method, headers)
    assert click.agent_class == expected
    assert click.human is (expected == "human")


# -- placeholders --------------------------------------------------------------------

CONFIG = LinksConfig(
    enabled=True, base_url="https://go.example-hospital.org", allow=("www.example-hospital.org",)
)
FLU = NamedLink(
    "lnk_" + "0" * 16, "flu-clinic", "https://www.example-hospital.org/flu", None, 0, "t"
)


def _book(config: LinksConfig = CONFIG, *links: NamedLink) -> LinkBook:
    book = LinkBook(config)
    book.load(list(links or (FLU,)))
    return book


def test_a_placeholder_becomes_a_fresh_short_url_bound_to_the_message() -> None:
    book = _book()
    body, minted = book.expand("Flu shots: {link:flu-clinic} or {link:flu-clinic}", "m1", 100.0)
    url = body.split(": ")[1].split(" or ")[0]
    host, _, token = url.rpartition("/")
    assert host == "https://go.example-hospital.org" and tokens.TOKEN.match(token)
    assert body == f"Flu shots: {url} or {url}"  # one token per link per message
    assert [(m.link_id, m.message_id) for m in minted] == [(FLU.id, "m1")]
    assert minted[0].token_hash == tokens.token_hash(token)
    assert minted[0].expires_at == 100.0 + 90 * 86400
    other, _ = book.expand("{link:flu-clinic}", "m2", 100.0)
    assert other != url
    assert book.preview("{link:flu-clinic}", 100.0) == "https://go.example-hospital.org/" + "x" * 16


def test_a_link_expiry_caps_the_tokens() -> None:
    soon = NamedLink(FLU.id, FLU.name, FLU.destination, 500.0, 0, "t")
    _, minted = _book(CONFIG, soon).expand("{link:flu-clinic}", "m", 100.0)
    assert minted[0].expires_at == 500.0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("see {link:nope}", "unknown_link"),
        ("see {link:Flu Clinic}", "unknown_link"),
        ("see {link:}", "unknown_link"),
    ],
)
def test_a_placeholder_that_names_no_link_is_refused(body: str, code: str) -> None:
    with pytest.raises(ApiError) as e:
        _book().expand(body, "m", 0.0, "messages[2].body")
    assert e.value.code == code and e.value.field == "messages[2].body"
    assert "character 5" in e.value.message and "nope" not in e.value.message


def test_an_expired_link_a_link_no_longer_allowed_and_links_off_are_refused() -> None:
    old = NamedLink(FLU.id, FLU.name, FLU.destination, 50.0, 0, "t")
    with pytest.raises(ApiError) as e:
        _book(CONFIG, old).expand("{link:flu-clinic}", "m", 100.0)
    assert e.value.code == "link_expired"
    moved = LinksConfig(enabled=True, base_url=CONFIG.base_url, allow=("other.example.org",))
    with pytest.raises(ApiError) as e:
        _book(moved).expand("{link:flu-clinic}", "m", 0.0)
    assert e.value.code == "link_not_allowed"
    with pytest.raises(ApiError) as e:
        _book(LinksConfig()).expand("{link:flu-clinic}", "m", 0.0)
    assert e.value.code == "links_off"
    assert _book(LinksConfig()).expand("no link {here}", "m", 0.0) == ("no link {here}", ())


def test_a_template_keeps_the_placeholder_for_the_accept_path() -> None:
    pieces = language.parse("{clinic}: flu shots, {link:flu-clinic}. {{braces}}")
    assert [p.name for p in language.placeholders(pieces)] == ["clinic"]
    filled = language.fill(pieces, {("clinic", None): "Mercy"})
    assert filled == "Mercy: flu shots, {link:flu-clinic}. {braces}"


# -- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("links", "key"),
    [
        ({"enabled": True, "allow": ["www.example.org"]}, "links.base_url"),
        ({"enabled": True, "base_url": "http://go.example.org", "allow": ["a.org"]},
         "links.base_url"),
        ({"enabled": True, "base_url": "https://go.example.org/x", "allow": ["a.org"]},
         "links.base_url"),
        ({"enabled": True, "base_url": "https://u@go.example.org", "allow": ["a.org"]},
         "links.base_url"),
        ({"enabled": True, "base_url": "https://go.example.org"}, "links.allow"),
        ({"allow": ["https://a.org/x?y=1"]}, "links.allow[0]"),
        ({"allow": ["a.org", "not a host"]}, "links.allow[1]"),
        ({"listen": "8081"}, "links.listen"),
        ({"token_length": 9}, "links.token_length"),
        ({"enabled": True, "base_url": "https://go.example.org", "allow": ["a.org"],
          "fallback_url": "https://b.org/"}, "links.fallback_url"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_key(links: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_mapping({"links": links})
    assert str(e.value).startswith(key), str(e.value)


def test_plain_http_is_for_a_loopback_short_host_only() -> None:
    loop = {"enabled": True, "base_url": "http://127.0.0.1:8081", "allow": ["a.org"]}
    assert from_mapping({"links": loop}).links.enabled
