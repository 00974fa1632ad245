import Hummingbird
import HTTPTypes
import NIOCore

/// The dashboard's only style sheet and script, served by kbuild itself (no
/// external fonts, scripts or styles; no build step). The script is small and
/// optional: every page reads without it; with it a page follows the event
/// stream and re-renders its `<main>` when a change it watches arrives.
enum Assets {
    static func response(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "public, max-age=300"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static let css = """
        :root { color-scheme: light; --fg: #1b1b1b; --muted: #555; --bg: #fff; --line: #d0d0d0; --link: #0b57d0; --ok: #0a6b2e; --warn: #a4262c; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
        a { color: var(--link); }
        a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible, pre:focus-visible { outline: 3px solid #1a73e8; outline-offset: 2px; }
        .skip { position: absolute; left: -9999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; z-index: 2; }
        header { border-bottom: 1px solid var(--line); padding: 8px 16px; }
        nav ul { list-style: none; display: flex; gap: 16px; margin: 0; padding: 0; flex-wrap: wrap; }
        nav { display: flex; justify-content: space-between; align-items: center; gap: 16px; flex-wrap: wrap; }
        .brand a { font-weight: 700; color: var(--fg); text-decoration: none; }
        .who { color: var(--muted); }
        #live { margin: 6px 0 0; color: var(--ok); }
        #live .dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; background: var(--ok); }
        #live.stale { color: #fff; background: var(--warn); padding: 2px 8px; }
        #live.stale .dot { background: #fff; }
        #live.past { color: #5c3c00; background: #fff4ce; padding: 2px 8px; }
        main { padding: 8px 16px 24px; max-width: 1400px; }
        aside { padding: 8px 16px; border-top: 1px solid var(--line); color: var(--muted); }
        aside ol { font-family: ui-monospace, monospace; font-size: 13px; max-height: 16em; overflow: auto; }
        table { border-collapse: collapse; width: 100%; margin: 8px 0; }
        caption { text-align: left; color: var(--muted); padding: 4px 0; }
        th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
        tr.current th, tr.current td { background: #eef5ff; }
        .muted, .hint, .count { color: var(--muted); }
        .ok { color: var(--ok); } .warn, .error, .build-failed, .state-backoff, .state-unhealthy { color: var(--warn); }
        .build-succeeded, .state-healthy { color: var(--ok); }
        .done { background: #e6f4ea; color: #0a4d23; padding: 4px 8px; }
        .error { font-weight: 600; }
        ul.attention li { color: var(--warn); } ul.attention a { color: var(--warn); font-weight: 600; }
        form { margin: 6px 0; } form.inline { display: inline; margin: 0; }
        form label { margin-right: 8px; }
        input, select, button { font: inherit; padding: 3px 6px; border: 1px solid #767676; border-radius: 3px; background: #fff; color: var(--fg); }
        button { background: #f2f2f2; cursor: pointer; }
        .login { max-width: 32em; } .login input { width: 100%; margin: 4px 0 8px; }
        pre.log, pre.file { background: #111; color: #eee; padding: 8px; overflow: auto; max-height: 70vh; white-space: pre-wrap; word-break: break-all; font-size: 13px; }
        dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; } dt { color: var(--muted); } dd { margin: 0; }
        code { font-family: ui-monospace, monospace; font-size: 0.95em; }
        .pager { margin: 8px 0; display: flex; gap: 12px; }
        """

    static let js = #"""
        "use strict";
        (() => {
          const body = document.body;
          const csrf = body.dataset.csrf || "";
          // A log that grows while it is shown: a build's, or the app's live lines.
          const follow = (pre) => {
            const url = pre.dataset.follow;
            if (!url || pre.dataset.following) return;
            pre.dataset.following = "1";
            fetch(url, { credentials: "same-origin" }).then(async (r) => {
              if (!r.ok || !r.body) return;
              const reader = r.body.getReader(), decoder = new TextDecoder();
              for (;;) {
                const { value, done } = await reader.read();
                if (done) break;
                const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
                pre.append(document.createTextNode(decoder.decode(value, { stream: true })));
                if (pre.textContent.length > 2000000) pre.textContent = pre.textContent.slice(-1000000);
                if (atEnd) pre.scrollTop = pre.scrollHeight;
              }
              pre.dataset.ended = "1";
            }).catch(() => {});
          };
          document.querySelectorAll("pre[data-follow]").forEach(follow);
          if (body.dataset.live !== "1") return;

          let revision = Number(body.dataset.revision);
          const watch = (body.dataset.watch || "").split(" ").filter(Boolean);
          const live = document.getElementById("live"), liveText = document.getElementById("livetext");
          const shown = document.getElementById("revision"), changes = document.getElementById("changes");
          const seen = (id) => { const n = Number(id); if (n > revision) revision = n; shown.textContent = String(revision); };

          // The page's <main> made again by the server, unless the user is typing in one of its fields.
          // At most one a second: a busy store (every node's heartbeat is a change) costs one render a second, not one each.
          let pending = null, lastRefresh = 0;
          const refresh = () => {
            if (pending) return;
            pending = setTimeout(async () => {
              pending = null;
              lastRefresh = Date.now();
              const main = document.getElementById("main");
              const active = document.activeElement;
              if (active && main.contains(active) && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) { refresh(); return; }
              const r = await fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } });
              if (!r.ok) return;
              const doc = new DOMParser().parseFromString(await r.text(), "text/html");
              const next = doc.getElementById("main");
              if (!next) return;
              const oldLog = main.querySelector("pre[data-following]");
              const newLog = next.querySelector("pre#log");
              main.replaceChildren(...next.childNodes);
              if (oldLog && newLog && !oldLog.dataset.ended) main.querySelector("pre#log").replaceWith(oldLog);
              main.querySelectorAll("pre[data-follow]").forEach(follow);
              body.dataset.refreshedAt = String(revision);
            }, Math.max(150, 1000 - (Date.now() - lastRefresh)));
          };

          let source = null;
          const open = () => {
            source = new EventSource("/events?after=" + revision);
            window.kbuildEvents = source;
            source.onopen = () => { live.classList.remove("stale"); liveText.textContent = "Live at revision"; };
            source.onerror = () => { live.classList.add("stale"); liveText.textContent = "Stale: the event stream is down (reconnecting); last revision"; };
            source.addEventListener("progress", (e) => seen(e.lastEventId));
            source.addEventListener("change", (e) => {
              const c = JSON.parse(e.data);
              seen(e.lastEventId);
              const li = document.createElement("li");
              li.dataset.revision = String(c.revision);
              const a = document.createElement("a");
              a.href = location.pathname + "?at=" + c.revision;
              a.textContent = "r" + c.revision;
              li.append(a, " " + c.ref + (c.deleted ? " removed" : "") + " by " + c.actor);
              changes.prepend(li);
              while (changes.children.length > 500) changes.lastElementChild.remove();
              if (!watch.length || watch.some((p) => c.ref.startsWith(p))) refresh();
            });
          };
          open();
          // Cutting the stream and opening it again from the last revision seen (what a browser does after a drop).
          window.kbuildCut = () => { source.close(); live.classList.add("stale"); liveText.textContent = "Stale: the event stream is down; last revision"; };
          window.kbuildReconnect = () => { source.close(); open(); };
          document.addEventListener("visibilitychange", () => { if (!document.hidden && source.readyState === EventSource.CLOSED) open(); });
        })();
        """#
}
