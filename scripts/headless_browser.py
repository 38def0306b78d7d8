"""Drive a real headless Chromium from Python, with the standard library only: open pages, run JavaScript, screenshot.

    python scripts/headless_browser.py site/index.html docs/front-page.png    # a screenshot of a page

The browser is Debian's `chromium` (or Google Chrome), started with --remote-debugging-pipe: it reads
DevTools Protocol commands, JSON objects each ended by a NUL byte, from its file descriptor 3 and writes the
answers and events to descriptor 4. No websocket library, no browser download. tests/test_site.py uses it
to check that the course site's pages load, with their images, in a browser.
"""

import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium():
    """The path of a Chromium-like browser on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(Exception):
    """The browser could not be started, or a page did not load in time."""


class Browser:
    """One headless browser process with one page (a tab); use as a context manager.

    with Browser() as browser:
        browser.open("file:///.../index.html")
        title = browser.evaluate("document.title")
    """

    def __init__(self, executable=None, width=1280, height=900, timeout=60):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError(f"no browser found (looked for {', '.join(CANDIDATES)}): apt-get install chromium")
        self.size, self.timeout = (width, height), timeout
        self._next_id, self._events, self._buffer = 0, [], b""

    def __enter__(self):
        self._profile = tempfile.mkdtemp(prefix="tinydgl-browser-")
        to_browser_read, self._write = os.pipe()  # the browser reads its fd 3 ...
        self._read, from_browser_write = os.pipe()  # ... and writes its fd 4
        args = [
            self.executable,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-pipe",
            "--allow-file-access-from-files",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.size[0]},{self.size[1]}",
            "about:blank",
        ]
        # a shell puts the two pipe ends at exactly fds 3 and 4, then becomes the browser
        command = 'exec "$@" 3<&%d 4>&%d' % (to_browser_read, from_browser_write)
        self._process = subprocess.Popen(
            ["bash", "-c", command, "browser", *args],
            pass_fds=(to_browser_read, from_browser_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        try:
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.send("Page.enable", session=True)
            self.send("Runtime.enable", session=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        self._process.kill()
        self._process.wait()
        for fd in (self._write, self._read):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # --- the protocol: a command, then its answer; events that come in between are kept -------------------

    def _messages(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self._process.poll() is not None:
                raise BrowserError(
                    "the browser stopped answering" if left > 0 else "the browser did not answer in time"
                )
            ready, _, _ = select.select([self._read], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed its pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, session=False, **params):
        """Send one DevTools command and return its result (raises BrowserError on an error answer)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._messages(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error'].get('message')}")
                return answer.get("result", {})
            self._events.append(answer)

    def wait_for(self, event):
        """Wait for a page event (e.g. Page.loadEventFired) that has not been seen yet."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, message in enumerate(self._events):
                if message.get("method") == event:
                    return self._events.pop(i)
            self._events.append(self._messages(deadline))

    # --- what a test needs ----------------------------------------------------------------------------------

    def open(self, url):
        """Load url and wait for its load event (images included); returns JavaScript errors seen so far."""
        self._events.clear()
        answer = self.send("Page.navigate", session=True, url=url)
        if answer.get("errorText"):
            raise BrowserError(f"{url}: {answer['errorText']}")
        self.wait_for("Page.loadEventFired")
        return [e["params"] for e in self._events if e.get("method") == "Runtime.exceptionThrown"]

    def evaluate(self, expression):
        """The value of a JavaScript expression on the page (promises are awaited)."""
        answer = self.send(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression[:80]}: {answer['exceptionDetails'].get('text')}")
        return answer["result"].get("value")

    def images(self):
        """[{src, loaded}] of every <img> on the page, each decoded first (lazy images too)."""
        return self.evaluate("""Promise.all(Array.from(document.images).map(img => {
            img.loading = "eager";
            return img.decode().then(() => ({src: img.src, loaded: img.naturalWidth > 0}),
                                     () => ({src: img.src, loaded: false}));
        }))""")

    def screenshot(self, path):
        """Save a PNG of the visible part of the page."""
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1].strip(), file=sys.stderr)
        return 2
    page, out = Path(argv[0]).resolve(), Path(argv[1])
    with Browser() as browser:
        browser.open(page.as_uri())
        broken = [i["src"] for i in browser.images() if not i["loaded"]]
        browser.screenshot(out)
    print(f"{out}: a screenshot of {page}" + (f" (images that did not load: {broken})" if broken else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
