"""The panel against WCAG 2.1 AA in a real browser, at a phone's, a tablet's and two
desktop widths: axe-core on every page, and what axe cannot see — pages wider than the
viewport, focus rings and input borders under 3:1, live regions rewritten with the same
value, live updates that cannot be paused, the idle sign-out without a warning, tables
cut off, a sign-in failure that loses the user name, a token without a copy button.

One gateway (a loopback route and a bank of emulated modems) serves the module; the
admin signs in once. axe runs in a context that ignores the page's CSP (it is injected
as a script); every other check runs under the real CSP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.browser.conftest import (
    ADMIN,
    VIEWER,
    Gateway,
    ModemSimulator,
    modem_simulator,
    start_gateway,
)
from tests.browser.test_panel import new_page, shot, sign_in

AXE = Path(__file__).resolve().parents[2] / "admin_ui" / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORTS = {
    "phone": {"width": 320, "height": 640},
    "tablet": {"width": 768, "height": 1024},
    "laptop": {"width": 1280, "height": 860},
    "desktop": {"width": 1440, "height": 900},
}
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# The laptop's layout is the desktop's with the messages table's optional columns hidden
# (app.css, max-width 1400px): it shows a subset of what axe checks at the desktop size,
# so there it is checked for reflow only (half a minute of the suite saved).
AXE_VIEWPORTS = {"phone", "tablet", "desktop"}
LONG_TOKEN_NAME = "radiology-results-interface-north-wing"

# Colours from getComputedStyle, contrast as WCAG 2.1 defines it; the background behind
# a node is the first opaque one at or above it.
CONTRAST_JS = """() => {
  function parse(c) {
    const m = /rgba?\\(([^)]+)\\)/.exec(c || "");
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  }
  function lum(c) {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  }
  function ratio(a, b) {
    const x = lum(a), y = lum(b);
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  }
  function background(node) {
    for (let n = node; n && n.nodeType === 1; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a >= 0.99) return c;
    }
    return {r: 255, g: 255, b: 255, a: 1};
  }
  function describe(n) {
    return n.tagName.toLowerCase() + (n.id ? "#" + n.id : "") +
      (typeof n.className === "string" && n.className
        ? "." + n.className.trim().split(/\\s+/).join(".") : "") +
      " '" + (n.textContent || n.value || "").trim().slice(0, 30) + "'";
  }
  window.__a11y = {parse, ratio, background, describe};
}"""

FOCUS_RING_JS = """() => {
  const a = window.__a11y, n = document.activeElement;
  if (!n || n === document.body) return null;
  const s = getComputedStyle(n);
  const ring = a.parse(s.outlineColor);
  const behind = a.background(n.parentElement);
  return {
    what: a.describe(n),
    style: s.outlineStyle,
    width: parseFloat(s.outlineWidth),
    ratio: ring && s.outlineStyle !== "none" ? a.ratio(ring, behind) : 0,
  };
}"""

INPUT_BORDERS_JS = """() => {
  const a = window.__a11y, out = [];
  document.querySelectorAll(
    "input:not([type=hidden]):not([type=checkbox]):not([type=radio]), select, textarea"
  ).forEach((n) => {
    if (!n.getClientRects().length) return;
    const s = getComputedStyle(n);
    const r = a.ratio(a.parse(s.borderTopColor), a.background(n.parentElement));
    if (r < 3 || parseFloat(s.borderTopWidth) < 1) out.push(a.describe(n) + " " + r.toFixed(2));
  });
  return out;
}"""


@pytest.fixture(scope="module")
def modems() -> Iterator[ModemSimulator]:
    sim = modem_simulator(2)
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, modems: ModemSimulator) -> Iterator[Gateway]:
    gateway = start_gateway(tmp_path_factory.mktemp("a11y"), modems=modems.paths)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def admin_ctx(browser: Any, gw: Gateway) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORTS["laptop"])
    page = new_page(context)
    sign_in(page, gw, ADMIN)
    page.wait_for_selector(".totp-secret")
    secret = re.sub(r"\s", "", page.inner_text(".totp-secret"))
    page.fill("#code", pyotp.TOTP(secret).now())
    page.click("main form button[type=submit]")
    page.wait_for_url(re.compile(r"/(account)?$"))
    page.close()
    yield context
    context.close()


@pytest.fixture(autouse=True)
def close_pages(admin_ctx: Any) -> Iterator[None]:
    """Each open dashboard holds a stream; Chromium allows six connections per host."""
    yield
    for page in admin_ctx.pages:
        page.close()


def _in_days(days: int) -> str:
    """A send_at inside the accept horizon (queue.max_schedule_days)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + days * 86400))


@pytest.fixture(scope="module")
def seeded(gw: Gateway) -> dict[str, str]:
    """Messages in several states, a failure, a scheduled one, and a long-named token."""
    ids = {"sent": gw.send(body="Your results are ready.")}
    gw.send(to="+12025550191", body="will not be delivered")
    ids["scheduled"] = gw.api(
        "POST",
        "/api/v1/messages",
        {"to": "+12025550147", "body": "Tomorrow", "send_at": _in_days(30)},
    )["id"]
    gw.cli("token", "create", "--scope", "send,read", "--name", LONG_TOKEN_NAME)
    ids["appointment"] = gw.api(
        "POST",
        "/api/v1/appointments",
        {
            "external_key": "ehr-1",
            "patient": {"mrn": "M1", "number": "+12025550147"},
            "start": _in_days(10),
            "clinic": "North Clinic",
            "location": "Room 4",
        },
    )["id"]
    return ids


@pytest.fixture(scope="module")
def axe_ctx(browser: Any, admin_ctx: Any) -> Iterator[Any]:
    """The admin's session in a context where axe can be injected past the CSP (its pages
    come from `axe_page`)."""
    if not AXE.exists():  # `make unit` installs admin_ui's npm packages (npm ci)
        pytest.skip("admin_ui/node_modules/axe-core is not installed: run `make unit`")
    context = browser.new_context(
        viewport=VIEWPORTS["laptop"], bypass_csp=True, storage_state=admin_ctx.storage_state()
    )
    yield context
    context.close()


def pages(seeded: dict[str, str]) -> list[str]:
    return [
        "/",
        "/messages",
        f"/messages/{seeded['sent']}",
        "/inbound",
        "/routes",
        "/tokens",
        "/users",
        "/audit",
        "/webhooks",
        "/consent",
        "/consent/reviews",
        "/appointments",
        f"/appointments/{seeded['appointment']}",
        "/hl7",
        "/templates",
        "/templates/reminder/es",
        "/reminder-rules",
        "/account",
        "/account/password",
        "/account/totp",
    ]


def settle(page: Any, path: str) -> None:
    if path.startswith("/templates/"):
        page.wait_for_selector("#template-preview .preview-body")
    if path == "/":
        page.wait_for_selector("#live-status[data-state=live]")
        page.wait_for_function("document.querySelector('#throughput-chart canvas') !== null")


# Only the violations come back, each rule with its first three nodes: axe's whole
# result (every passing node with its HTML) was most of the time on a long page, spent
# on listing and serialising what the test never reads. `resultTypes` keeps every
# violating node and lists at most one node of the rules that pass.
AXE_RUN_JS = """tags => axe.run(document, {
    runOnly: {type: 'tag', values: tags}, resultTypes: ['violations'],
}).then((r) => r.violations.map((v) => [v.id, v.nodes.slice(0, 3).map((n) => n.target)]))"""


def axe_context(browser: Any, **options: Any) -> Any:
    """A context where axe can run: the page's CSP is bypassed (axe is a script of ours),
    and axe is loaded into each document by Chromium itself as it is created, instead of
    being sent over the pipe with every page (a quarter of a second a page)."""
    context = browser.new_context(bypass_csp=True, **options)
    context.add_init_script(path=str(AXE))
    return context


def axe_page(context: Any, viewport: str) -> Any:
    """A page of `context` at `viewport`, axe loaded into its documents where axe runs at
    that width (the laptop's is checked for reflow only: it would load axe for nothing)."""
    page = context.new_page()
    page.set_viewport_size(VIEWPORTS[viewport])
    if viewport in AXE_VIEWPORTS:
        page.add_init_script(path=str(AXE))
    return page


def axe_violations(page: Any) -> list[str]:
    if not page.evaluate("typeof axe !== 'undefined'"):  # a page of any other context
        page.add_script_tag(path=str(AXE))
    return [f"{rule}: {targets}" for rule, targets in page.evaluate(AXE_RUN_JS, AXE_TAGS)]


def overflow(page: Any) -> str | None:
    """The widest element past the viewport's right edge, if the page scrolls sideways."""
    return page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          if (document.documentElement.scrollWidth <= width) return null;
          let worst = null, right = width;
          const clips = (n) => {
            for (let p = n.parentElement; p && p !== document.body; p = p.parentElement) {
              if (getComputedStyle(p).overflowX !== "visible") return true;
            }
            return false;
          };
          document.querySelectorAll("body *").forEach((n) => {
            if (clips(n)) return;
            const r = n.getBoundingClientRect();
            if (r.right > right + 0.5) { right = r.right; worst = n; }
          });
          return document.documentElement.scrollWidth + " > " + width + " (" +
            (worst ? worst.tagName + "." + worst.className + " right " + Math.round(right)
                   : "?") + ")";
        }"""
    )


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_every_page_passes_axe_and_reflows(
    axe_ctx: Any, browser: Any, gw: Gateway, seeded: dict[str, str], viewport: str
) -> None:
    page = axe_page(axe_ctx, viewport)
    problems = []
    for path in pages(seeded):
        response = page.goto(gw.url + path)
        assert response is not None and response.status == 200, path
        settle(page, path)
        wide = overflow(page)
        if wide:
            problems.append(f"{path} wider than the viewport: {wide}")
        if viewport in AXE_VIEWPORTS:
            problems.extend(f"{path} {v}" for v in axe_violations(page))
    page.close()
    # The sign-in page, signed out.
    context = axe_context(browser, viewport=VIEWPORTS[viewport])
    page = context.new_page()
    page.goto(gw.url + "/login")
    if viewport in AXE_VIEWPORTS:
        problems.extend(f"/login {v}" for v in axe_violations(page))
    wide = overflow(page)
    if wide:
        problems.append(f"/login wider than the viewport: {wide}")
    context.close()
    assert problems == []


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_worklist_passes_axe_and_reflows(axe_ctx: Any, gw: Gateway, viewport: str) -> None:
    """The Worklist page (issue 13) on its own: the page list above is near its time
    limit on a busy machine."""
    page = axe_page(axe_ctx, viewport)
    response = page.goto(gw.url + "/worklist")
    assert response is not None and response.status == 200
    problems = [f"/worklist {v}" for v in axe_violations(page)] if viewport in AXE_VIEWPORTS else []
    wide = overflow(page)
    if wide:
        problems.append(f"/worklist wider than the viewport: {wide}")
    page.close()
    assert problems == []


def test_focus_rings_and_input_borders_reach_3_to_1(
    admin_ctx: Any, gw: Gateway, seeded: dict[str, str]
) -> None:
    page = new_page(admin_ctx)
    weak: list[str] = []
    for path in pages(seeded):
        page.goto(gw.url + path)
        settle(page, path)
        page.evaluate(CONTRAST_JS)
        weak.extend(f"{path} border {b}" for b in page.evaluate(INPUT_BORDERS_JS))
        seen: set[str] = set()
        for _ in range(60):
            page.keyboard.press("Tab")
            ring = page.evaluate(FOCUS_RING_JS)
            if ring is None or ring["what"] in seen:
                break
            seen.add(ring["what"])
            if ring["style"] == "none" or ring["width"] < 2 or ring["ratio"] < 3:
                weak.append(f"{path} focus {ring}")
        assert len(seen) >= 3, path  # the walk reached the page's controls
    assert weak == []
    assert page.problems == []


@pytest.mark.parametrize("viewport", ["laptop", "desktop"])
def test_tables_are_not_cut_off_on_a_desktop(
    admin_ctx: Any, gw: Gateway, seeded: dict[str, str], viewport: str
) -> None:
    page = new_page(admin_ctx)
    page.set_viewport_size(VIEWPORTS[viewport])
    for path in ("/messages", "/tokens", "/inbound", "/audit", "/users"):
        page.goto(gw.url + path)
        clipped = page.evaluate(
            """() => [...document.querySelectorAll('.table-wrap')]
                .filter((w) => w.scrollWidth > w.clientWidth + 1)
                .map((w) => w.scrollWidth + ' > ' + w.clientWidth)"""
        )
        assert clipped == [], path
    page.goto(gw.url + "/tokens")
    width = VIEWPORTS[viewport]["width"]
    for box in (b.bounding_box() for b in page.locator("button", has_text="Revoke").all()):
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width


def test_a_phone_shows_every_key_column_of_a_message(
    admin_ctx: Any, gw: Gateway, seeded: dict[str, str], artifacts: Path
) -> None:
    page = new_page(admin_ctx)
    page.set_viewport_size(VIEWPORTS["phone"])
    page.goto(gw.url + "/messages")
    row = page.locator(f"tr[data-message-id='{seeded['sent']}']")
    for cell in ("id", "state", "class", "route", "to", "created"):
        box = row.locator(f"[data-col={cell}]").bounding_box()
        assert box is not None and box["width"] > 0, cell
        assert box["x"] >= 0 and box["x"] + box["width"] <= 320, (cell, box)
        # each value says what it is: the column's name is shown beside it
        label = row.locator(f"[data-col={cell}]").evaluate(
            "n => getComputedStyle(n, '::before').content"
        )
        assert label not in ("none", "normal", '""'), cell
    shot(page, artifacts, "a11y-messages-phone")


def test_chart_labels_do_not_overlap_on_a_tablet(admin_ctx: Any, gw: Gateway) -> None:
    page = new_page(admin_ctx)
    for viewport in ("tablet", "phone"):
        page.set_viewport_size(VIEWPORTS[viewport])
        page.goto(gw.url + "/")
        settle(page, "/")
        overlaps = page.evaluate(
            """() => {
              const u = document.getElementById('throughput-chart').uplotChart;
              const ctx = document.createElement('canvas').getContext('2d');
              const out = [];
              u.axes.forEach((axis, i) => {
                if (!axis._splits || !axis._values) return;
                ctx.font = axis.font[0];
                const key = i === 0 ? 'x' : 'y';
                const boxes = axis._splits.map((v, j) => {
                  const text = String(axis._values[j] ?? '');
                  const size = i === 0
                    ? Math.max(...text.split('\\n').map((l) => ctx.measureText(l).width))
                    : axis.font[1] * 1.2;
                  const at = u.valToPos(v, key);
                  return {text, lo: at - size / 2, hi: at + size / 2};
                }).filter((b) => b.text).sort((a, b) => a.lo - b.lo);
                for (let j = 1; j < boxes.length; j++) {
                  if (boxes[j].lo < boxes[j - 1].hi + 4) {
                    out.push(boxes[j - 1].text + ' / ' + boxes[j].text);
                  }
                }
                const plot = u.over.getBoundingClientRect();
                const right = document.documentElement.clientWidth - plot.left;
                if (i === 0 && boxes.length &&
                    (boxes[0].lo < -plot.left || boxes[boxes.length - 1].hi > right)) {
                  out.push('a label leaves the page');
                }
              });
              return out;
            }"""
        )
        assert overlaps == [], viewport


def test_live_figures_are_rewritten_only_when_they_change(
    admin_ctx: Any, gw: Gateway, seeded: dict[str, str]
) -> None:
    page = new_page(admin_ctx)
    page.goto(gw.url + "/")
    settle(page, "/")
    page.evaluate(
        """() => {
          window.__mutated = [];
          document.querySelectorAll('[aria-live], [role=status]').forEach((n) => {
            new MutationObserver(() => window.__mutated.push(n.id || n.getAttribute('data-bind')))
              .observe(n, {childList: true, characterData: true, subtree: true});
          });
        }"""
    )
    # A change the live figures do not show: the route card, nothing else, changes.
    gw.api("POST", "/api/v1/routes/main/pause")
    page.wait_for_selector("[data-route=main] [data-field=state]:text('paused')")
    assert page.evaluate("window.__mutated") == []
    gw.api("POST", "/api/v1/routes/main/resume")
    page.wait_for_selector("[data-route=main] [data-field=state]:text('up')")
    assert page.evaluate("window.__mutated") == []
    # A change they do show is written (so the observer would have seen one).
    before = int(re.sub(r"\D", "", page.inner_text("#sent-last-hour")) or 0)
    gw.send(body="counted")
    page.wait_for_function(
        "n => Number(document.querySelector('#sent-last-hour').textContent"
        ".replace(/\\D/g, '')) > n",
        arg=before,
    )
    assert "sent-last-hour" in page.evaluate("window.__mutated")
    assert page.problems == []


def test_live_updates_can_be_paused_and_resumed(admin_ctx: Any, gw: Gateway) -> None:
    page = new_page(admin_ctx)
    page.goto(gw.url + "/")
    settle(page, "/")
    toggle = page.locator("#live-toggle")
    assert toggle.inner_text().strip() == "Pause live updates"
    toggle.click()
    assert toggle.inner_text().strip() == "Resume live updates"
    page.wait_for_selector("#live-status[data-state=paused]")
    shown = page.inner_text("#sent-last-hour")
    gw.send(body="arrives while paused")
    # The snapshot arrives and is held back: the page says so, the figure stays.
    page.wait_for_selector("#live-status[data-state=paused][data-waiting=true]")
    assert page.inner_text("#sent-last-hour") == shown
    toggle.click()
    page.wait_for_function(
        "s => document.querySelector('#sent-last-hour').textContent !== s", arg=shown
    )
    assert toggle.inner_text().strip() == "Pause live updates"
    assert page.problems == []


def test_warning_tiles_say_so_in_text(admin_ctx: Any, gw: Gateway, seeded: dict[str, str]) -> None:
    page = new_page(admin_ctx)
    page.goto(gw.url + "/")
    settle(page, "/")
    page.wait_for_selector("[data-warn-key='outcomes.failed'].is-warn")
    flag = page.locator("[data-warn-key='outcomes.failed'] .warn-flag")
    assert flag.is_visible() and flag.inner_text().strip() != ""
    # a tile that is fine shows no flag
    assert not page.locator("[data-warn-key='queue.possible_duplicates'] .warn-flag").is_visible()


def test_modem_signal_is_shown_in_dbm_and_bars(admin_ctx: Any, gw: Gateway) -> None:
    page = new_page(admin_ctx)
    for path in ("/routes", "/"):
        page.goto(gw.url + path)
        settle(page, path)
        cell = page.locator("[data-route=sim-bank] td[data-col=signal]").first
        cell.wait_for()
        assert re.search("\u2212\\d+ dBm", cell.inner_text()), cell.inner_text()
        assert cell.locator(".bars").count() == 1


def test_audit_times_name_their_time_zone(browser: Any, admin_ctx: Any, gw: Gateway) -> None:
    context = browser.new_context(
        storage_state=admin_ctx.storage_state(), timezone_id="America/Chicago"
    )
    page = new_page(context)
    page.goto(gw.url + "/audit")
    header = page.inner_text("thead th:nth-child(2)")
    when = page.locator("tbody time").first.inner_text()
    zone = page.evaluate(
        "() => new Intl.DateTimeFormat(undefined, {timeZoneName: 'short'})"
        ".formatToParts(new Date()).find((p) => p.type === 'timeZoneName').value"
    )
    assert zone in when, (zone, when)
    assert "UTC" not in header
    context.close()


def test_a_failed_sign_in_keeps_the_user_name(browser: Any, gw: Gateway) -> None:
    context = browser.new_context()
    page = new_page(context)
    page.goto(gw.url + "/login")
    page.fill("#username", VIEWER[0])
    page.fill("#password", "not the password at all")
    page.click("main form button[type=submit]")
    page.wait_for_selector("p.error[role=alert]")
    assert page.input_value("#username") == VIEWER[0]
    assert page.input_value("#password") == ""
    assert "not the password at all" not in page.content()
    context.close()


def test_a_new_token_can_be_copied(browser: Any, admin_ctx: Any, gw: Gateway) -> None:
    context = browser.new_context(
        storage_state=admin_ctx.storage_state(),
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = new_page(context)
    page.goto(gw.url + "/tokens")
    page.fill("#t-name", "copy-check")
    page.click("form[action='/tokens'] button[type=submit]")
    token = page.inner_text("#new-token").strip()
    # The Clipboard API refuses a page without focus ("Document is not focused"), which
    # another worker's browser can take under load: the page is given it first.
    page.bring_to_front()
    page.focus("#copy-token")
    page.click("#copy-token")
    page.wait_for_selector("#copy-result:not(:empty)")
    assert page.inner_text("#copy-result") == "Copied to the clipboard."
    assert page.evaluate("navigator.clipboard.readText()") == token
    # Without the Clipboard API the token is selected, and the page says how to copy it.
    page.evaluate(
        "() => { navigator.clipboard.writeText = () => Promise.reject(new Error('denied')); }"
    )
    page.click("#copy-token")
    page.wait_for_selector("#copy-result:has-text('Ctrl+C')")
    assert page.evaluate("String(window.getSelection())").strip() == token
    assert page.problems == []
    context.close()


def test_screenshots_at_320_and_1440(
    admin_ctx: Any, gw: Gateway, seeded: dict[str, str], artifacts: Path
) -> None:
    page = new_page(admin_ctx)
    for viewport in ("phone", "desktop"):
        page.set_viewport_size(VIEWPORTS[viewport])
        for name, path in (("dashboard", "/"), ("messages", "/messages"), ("tokens", "/tokens"),
                           ("routes", "/routes"), ("audit", "/audit"),
                           ("message", f"/messages/{seeded['sent']}"),
                           ("inbound", "/inbound")):  # fmt: skip
            page.goto(gw.url + path)
            settle(page, path)
            shot(page, artifacts, f"a11y-{name}-{viewport}")
            if viewport == "phone":  # a tall page, also in parts a reader can look at
                height = page.evaluate("document.documentElement.scrollHeight")
                for part, top in enumerate(range(0, height, 1000)):
                    clip = {"x": 0, "y": top, "width": 320, "height": min(1000, height - top)}
                    page.screenshot(
                        path=str(artifacts / f"a11y-{name}-phone-{part + 1}.png"),
                        full_page=True,
                        clip=clip,
                    )
    assert page.problems == []


def test_the_idle_warning_offers_to_stay_signed_in(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> None:
    idle = 8.0
    gw = start_gateway(
        tmp_path_factory.mktemp("idle-warning"),
        idle_timeout=idle,
        users=((VIEWER, "viewer"),),
        api_token=False,
    )
    try:
        context = browser.new_context(viewport=VIEWPORTS["laptop"])
        page = new_page(context)
        sign_in(page, gw, VIEWER)
        page.wait_for_selector("nav.sidenav")
        # Taken before the request: the server touches the session after it, so the first
        # deadline is at least `idle` from here however slowly the page then loads.
        loaded = time.monotonic()
        page.goto(gw.url + "/messages")
        dialog = page.locator("#idle-warning")
        dialog.wait_for(state="visible", timeout=idle * 1000)
        assert page.evaluate("document.activeElement.id") == "idle-stay"
        assert "signed out" in dialog.inner_text()
        shot(page, artifacts, "a11y-idle-warning")
        page.click("#idle-stay")
        dialog.wait_for(state="hidden")
        # The session was refreshed on the server: the warning comes round again, later
        # than the first sign-out would have happened, and the session still answers.
        dialog.wait_for(state="visible", timeout=idle * 2000)
        assert time.monotonic() - loaded > idle  # past the first deadline
        page.goto(gw.url + "/account")
        assert page.url.endswith("/account")
        # Nobody answers this time: the page goes to the sign-in form.
        page.wait_for_url(re.compile(r"/login$"), timeout=idle * 2000)
        assert page.problems == []
        context.close()
    finally:
        gw.stop()
