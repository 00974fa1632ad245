#!/usr/bin/env python3
"""The dashboard in a real browser: Debian's Chromium driven by Playwright,
against a real `kbuild up` with real git pushes (DashboardBrowserTests runs
this with a fresh data dir that has the busybox stack).

Every check waits with Playwright's auto-waiting `expect`, never a sleep.
Screenshots of each page go to --artifacts. The last line printed is a JSON
summary: {"checks": N, "pages": [...], "axe": {...}}; the exit status is 0
only when every check passed.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

from playwright.sync_api import expect, sync_playwright
from axe_playwright_python.sync_playwright import Axe

parser = argparse.ArgumentParser()
parser.add_argument("--kbuild", required=True)
parser.add_argument("--data", required=True)
parser.add_argument("--work", required=True)
parser.add_argument("--examples", required=True)
parser.add_argument("--artifacts", required=True)
args = parser.parse_args()

URL = open(os.path.join(args.data, "server.url")).read().strip()
ROUTER = open(os.path.join(args.data, "router.url")).read().strip()
ADMIN = open(os.path.join(args.data, "admin.token")).read().strip()
ENV = dict(os.environ, KBUILD_DATA_DIR=args.data)
checks = 0
pages = []
axe_report = {}
expect.set_options(timeout=30_000)


def check(condition, what):
    global checks
    if not condition:
        raise AssertionError(what)
    checks += 1


def kb(*argv, ok=True):
    r = subprocess.run([args.kbuild, *argv], env=ENV, capture_output=True, text=True, timeout=300)
    if ok and r.returncode != 0:
        raise AssertionError(f"kbuild {' '.join(argv)} failed: {r.stderr}")
    return r


def git(*argv, cwd):
    r = subprocess.run(["git", "-c", "user.name=Ada <b>Lovelace</b>", "-c", "user.email=ada@example.com", *argv],
                       cwd=cwd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"git {' '.join(argv)} failed: {r.stderr}")
    return r


def api(path, token=ADMIN, method="GET", body=None):
    req = urllib.request.Request(URL + "/api/v1" + path, method=method, data=body,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def served(host):
    req = urllib.request.Request(ROUTER + "/", headers={"Host": host})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read().decode()


def request_id(host):
    req = urllib.request.Request(ROUTER + "/", headers={"Host": host})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["X-Request-Id"]


def shot(page, name):
    pages.append(name)
    page.screenshot(path=os.path.join(args.artifacts, name + ".png"), full_page=True)


def scan(page, name):
    """axe-core (as shipped in axe-playwright-python): no critical or serious findings."""
    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("critical", "serious")]
    axe_report[name] = {"violations": len(results.response["violations"]), "critical_or_serious": len(bad)}
    check(not bad, f"axe on {name}: " + "; ".join(f"{v['id']} ({v['impact']}): {v['help']} at "
                                                   + ", ".join(n['target'][0] for n in v['nodes'][:3]) for v in bad))


# --- The app: the procfile example, first pushed with a commit message that is markup.
work = args.work
subprocess.run(["cp", "-a", os.path.join(args.examples, "procfile") + "/.", work], check=True)
with open(os.path.join(work, "www", "index.html"), "w") as f:
    f.write("<p>version one</p>\n")
# A log line that is markup and an escape sequence: the logs page must show it as text.
serve = open(os.path.join(work, "serve.sh")).read()
with open(os.path.join(work, "serve.sh"), "w") as f:
    f.write(serve.replace("set -eu\n", "set -eu\necho '<script>window.__xss=3</script> boot \033[31mred'\n", 1))
git("init", "-q", "-b", "main", cwd=work)
git("add", "-A", cwd=work)
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2"> first'
git("commit", "-q", "-m", XSS, cwd=work)
kb("apps:create", "web", "--stack", "busybox")
kb("apps:create", "other", "--stack", "busybox")
subprocess.run([args.kbuild, "git:remote", "web"], env=ENV, cwd=work, check=True, capture_output=True)
kb("config:set", "web", "GREETING=<b>hello</b>")  # before the first release: v1 is the push
git("push", "-q", "kbuild", "main", cwd=work)
app_token = kb("tokens:create", "webdev", "--app", "web").stdout.strip()
check(served("web.localhost").startswith("<p>version one</p>"), "v1 serves")

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-dev-shm-usage"])
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # --- Not logged in: the login page, nothing leaked; a forged or garbage cookie is the same.
    page.goto(URL + "/apps/web")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    check("web" not in page.locator("main").inner_text().split(), "the login page names no app")
    context.add_cookies([{"name": "kbuild_session", "value": "A" * 120, "url": URL}])
    page.goto(URL + "/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("heading", name="Log in to kbuild")).to_be_visible()
    scan(page, "login")
    shot(page, "login")
    page.get_by_label("Token").fill("kbt_" + "x" * 40)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    context.clear_cookies()

    # --- A one-time login link from `kbuild dashboard`: works once.
    link = kb("dashboard", "--quiet").stdout.strip()
    check(link.startswith(URL + "/login?code="), f"kbuild dashboard prints a login URL: {link}")
    page.goto(link)
    expect(page.locator("main")).to_contain_text("logs this browser in as admin")
    page.get_by_role("button", name="Continue to the dashboard").click()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "kbuild_session")
    check(cookie["httpOnly"] and cookie["sameSite"] == "Strict", f"session cookie flags: {cookie}")
    other = browser.new_context()
    op = other.new_page()
    op.goto(link)
    expect(op.get_by_role("alert")).to_contain_text("used already")
    check(op.get_by_role("button", name="Continue to the dashboard").count() == 0, "a spent link offers nothing to continue with")
    other.close()

    # --- Overview: live, every app with its release and health.
    expect(page.locator("#live")).to_contain_text("Live at revision")
    expect(page.get_by_role("row", name=re.compile(r"^web v1"))).to_contain_text("1/1 healthy")
    expect(page.get_by_role("row", name=re.compile(r"^other"))).to_be_visible()
    scan(page, "overview")
    shot(page, "overview")

    # --- The commit message and config are text, never markup.
    page.goto(URL + "/apps/web/releases/1")
    expect(page.locator("dd.message")).to_have_text(XSS)
    check(page.evaluate("window.__xss") is None, "the commit message ran as script")
    expect(page.locator("dd").filter(has_text="ada@example.com")).to_contain_text("<ada@example.com>")
    scan(page, "release")
    shot(page, "release")

    # --- A push shows on the builds page as it happens, and its log is there.
    page.goto(URL + "/builds")
    before = page.locator("tbody tr").count()
    with open(os.path.join(work, "www", "index.html"), "w") as f:
        f.write("<p>version two</p>\n")
    git("commit", "-qam", "Second version", cwd=work)
    git("push", "-q", "kbuild", "main", cwd=work)
    expect(page.locator("tbody tr")).to_have_count(before + 1)
    expect(page.locator("tbody tr").first).to_contain_text("succeeded")
    scan(page, "builds")
    shot(page, "builds")
    page.locator("tbody tr").first.get_by_role("link").first.click()
    expect(page.locator("pre#log")).to_contain_text("Procfile")
    expect(page.locator("#build-state")).to_have_text("succeeded")
    scan(page, "build")
    shot(page, "build")

    # --- The app page: v2 live; roll back to v1 from it, and v1 serves again.
    page.goto(URL + "/apps/web")
    expect(page.get_by_role("row", name=re.compile(r"^v2 Deploy"))).to_be_visible()
    scan(page, "app")
    shot(page, "app")
    row = page.get_by_role("row", name=re.compile(r"^v1 Deploy"))
    row.get_by_label("I am sure").check()
    row.get_by_role("button", name="Roll back to v1").click()
    expect(page.get_by_role("status").filter(has_text="Rolled back to v1")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(r"^v3 Rollback"))).to_be_visible()
    api_release = api("/apps/web")["release"]
    check(api_release["version"] == 3, f"the rollback made v3: {api_release}")
    # The rollout converges and the router serves v1's page again.
    expect(page.get_by_role("row", name=re.compile(r"^v3 Rollback"))).to_contain_text("healthy")
    check(served("web.localhost").startswith("<p>version one</p>"), "after the rollback v1's page serves")

    # --- A rollback to a release that does not exist: said, nothing changed.
    csrf = page.locator("body").get_attribute("data-csrf")
    r = page.request.post(URL + "/apps/web/rollback", form={"csrf": csrf, "version": "99", "confirm": "yes"})
    check(r.status == 404 and "no release v99" in r.text(), f"rollback to v99: {r.status}")
    check(api("/apps/web")["release"]["version"] == 3, "nothing changed")

    # --- CSRF: a POST without the token, or with a wrong one, changes nothing.
    for form in ({"key": "EVIL", "value": "1"}, {"key": "EVIL", "value": "1", "csrf": "forged"}):
        r = page.request.post(URL + "/apps/web/config", form=form)
        check(r.status == 403 and "CSRF" in r.text(), f"CSRF refused: {r.status}")
    check("EVIL" not in api("/apps/web/config")["vars"], "nothing was set without the CSRF token")

    # --- Killing a process: the page shows it restarting.
    page.goto(URL + "/apps/web")
    ps_row = page.get_by_role("row", name=re.compile(r"^web\.1 healthy"))
    expect(ps_row).to_be_visible()
    pid = int(ps_row.locator("td").nth(2).inner_text())
    os.kill(pid, signal.SIGKILL)
    expect(page.get_by_role("row", name=re.compile(r"^web\.1 healthy"))).not_to_contain_text(str(pid))
    expect(page.get_by_role("row", name=re.compile(r"^web\.1 ")).locator("td").nth(3)).to_have_text(re.compile(r"^[1-9]\d*$"))

    # --- The event stream cut mid-way: the page says it is stale; reconnected, it replays what was missed, in order.
    start = int(page.locator("#revision").inner_text())
    page.evaluate("kbuildCut()")
    expect(page.locator("#live")).to_have_class(re.compile("stale"))
    kb("config:set", "web", "MISSED_ONE=1")
    kb("config:set", "web", "MISSED_TWO=2")
    page.evaluate("kbuildReconnect()")
    expect(page.locator("#live")).not_to_have_class(re.compile("stale"))
    expect(page.get_by_role("row", name=re.compile(r"^MISSED_TWO"))).to_be_visible()
    now = api("/revision")["value"]
    expect(page.locator("#changes li").first).to_have_attribute("data-revision", re.compile(r"\d+"))
    expect(page.locator(f'#changes li[data-revision="{now}"]')).to_have_count(1)
    seen = sorted(int(x) for x in page.locator("#changes li").evaluate_all("els => els.map(e => e.dataset.revision)"))
    after_cut = [n for n in seen if n > start]
    check(after_cut and after_cut == list(range(start + 1, after_cut[-1] + 1)), f"every revision after {start} replayed once, in order: {after_cut}")
    check(len(seen) == len(set(seen)), f"no revision twice: {seen}")

    # --- Config values: hidden until asked for, then shown as text and recorded.
    expect(page.locator("main")).not_to_contain_text("<b>hello</b>")
    page.get_by_role("button", name="Show values (recorded)").click()
    expect(page.get_by_role("row", name=re.compile(r"^GREETING"))).to_contain_text("<b>hello</b>")
    history = api("/state/history?name=apps/web/config-access")
    check(len(history) == 1 and history[0]["actor"] == "dashboard", f"the showing is recorded: {history}")
    scan(page, "config")

    # --- Scale, set and unset config, domains, restart: each a POST through the API.
    page.goto(URL + "/apps/web")
    page.get_by_label("Key", exact=True).fill("COLOR")
    page.get_by_label("Value", exact=True).fill("blue")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Set COLOR")).to_be_visible()
    check(api("/apps/web/config")["vars"].get("COLOR") == "blue", "config set from the page")
    page.get_by_label("Domain", exact=True).fill("web.example.com")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("list").filter(has_text="web.example.com")).to_be_visible()
    page.get_by_label("Count").fill("2")
    page.get_by_role("button", name="Scale").click()
    expect(page.get_by_role("status").filter(has_text="Scaled web to 2")).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(r"^web\.2 "))).to_be_visible()
    check(api("/apps/web")["release"]["formation"]["web"]["quantity"] == 2, "scaled from the page")

    # --- Logs: live lines, server-side search, download.
    page.goto(URL + "/apps/web/logs")
    expect(page.locator("pre#log")).to_contain_text("busybox httpd serving")
    expect(page.locator("pre#log")).to_contain_text("<script>window.__xss=3</script> boot \ufffd[31mred")
    check(page.evaluate("window.__xss") is None, "a log line ran as script")
    served("web.localhost")
    expect(page.locator("pre#log")).to_contain_text("response:200")
    scan(page, "logs")
    shot(page, "logs")
    page.get_by_label("Search").fill("serving")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("pre#log")).to_contain_text("serving")
    check("response:200" not in page.locator("pre#log").inner_text(), "search filters on the server")
    page.get_by_label("Search").fill("no-such-line-anywhere-" + "x" * 10)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("p.count").first).to_contain_text("0 matching lines")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download every line").click()
    check("serving" in open(download.value.path()).read(), "the download has the lines")

    # --- Nodes and trace.
    page.goto(URL + "/nodes")
    expect(page.get_by_role("row", name=re.compile(r"^local reporting"))).to_be_visible()
    scan(page, "nodes")
    shot(page, "nodes")
    page.goto(URL + "/trace")
    page.get_by_label("PID, KID, APP@vN, commit or request id").fill("web@v2")
    page.get_by_role("button", name="Trace").click()
    expect(page.locator("ol.chain")).to_contain_text("Second version")
    page.get_by_label("File").fill("www/index.html")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("pre.file")).to_contain_text("<p>version two</p>")
    scan(page, "trace")
    shot(page, "trace")
    # A request, by the id the router gave it: the chain from the process that answered to its commit.
    rid = request_id("web.localhost")
    check(bool(rid), "the router names each request")
    page.goto(URL + "/trace")
    page.get_by_label("PID, KID, APP@vN, commit or request id").fill(rid)
    page.get_by_role("button", name="Trace").click()
    expect(page.locator("ol.chain")).to_contain_text("Process")
    expect(page.locator("ol.chain")).to_contain_text("Commit")
    page.goto(URL + "/trace?q=" + "zz-nonsense-zz")
    expect(page.get_by_role("alert")).to_be_visible()

    # --- Time travel: a change's link shows the state as of its revision; out of range is said.
    page.goto(URL + f"/apps/web?at={start}")
    expect(page.locator("#live")).to_contain_text(f"As of revision {start}")
    expect(page.get_by_role("row", name=re.compile(r"^v3 Rollback"))).to_be_visible()
    expect(page.get_by_role("row", name=re.compile(r"^v4 "))).to_have_count(0)
    shot(page, "app-as-of")
    page.goto(URL + "/?at=999999999")
    expect(page.get_by_role("alert")).to_contain_text("out of range")

    # --- An app token's session: its app only; another app, existing or not, gets the same 403.
    second = browser.new_context()
    ap = second.new_page()
    ap.goto(URL + "/login")
    ap.get_by_label("Token").fill(app_token)
    ap.get_by_role("button", name="Log in").click()
    expect(ap.get_by_role("row", name=re.compile(r"^web v"))).to_be_visible()
    expect(ap.get_by_role("row", name=re.compile(r"^other"))).to_have_count(0)
    for path in ("/apps/other", "/apps/nosuch", "/nodes", "/trace"):
        r = ap.goto(URL + path)
        check(r.status == 403, f"{path} with the app token: {r.status}")
    second.close()

    # --- Log out: the old cookie no longer works.
    page.goto(URL + "/")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    stale = browser.new_context()
    stale.add_cookies([{"name": "kbuild_session", "value": cookie["value"], "url": URL}])
    sp = stale.new_page()
    sp.goto(URL + "/")
    expect(sp).to_have_url(re.compile(r"/login"))
    stale.close()
    browser.close()

print(json.dumps({"checks": checks, "pages": pages, "axe": axe_report}))
