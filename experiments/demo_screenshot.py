"""docs/demo.png: `uniner-demo` serving a trained export, asked about a text it never saw,
photographed by headless Chromium (Playwright), as a user sees the page.

    python experiments/demo_screenshot.py outputs/real_student/train/export
    python experiments/demo_screenshot.py EXPORT --text "..." --types "person, award" --out x.png

The default text is a news-style paragraph written for this page (none of the training data or
the benchmarks holds it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TEXT = ("Katalin Karikó and Drew Weissman received the Nobel Prize in Physiology or Medicine "
        "in Stockholm for their work on mRNA vaccines at the University of Pennsylvania. "
        "BioNTech and Moderna later built their COVID-19 vaccines on it.")
TYPES = "person, award, location, organization, university, disease"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--text", default=TEXT)
    parser.add_argument("--types", default=TYPES)
    parser.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("UNINER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "uniner.cli.demo",
                                   f"checkpoint={args.export.resolve()}", "host=127.0.0.1",
                                   f"port={port}", f"hydra.run.dir={tmp}"], cwd=tmp,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        sys.exit("uniner-demo did not start")
                    time.sleep(1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(url, wait_until="networkidle")
                page.locator("#uniner-text textarea").fill(args.text)
                page.locator("#uniner-types textarea, #uniner-types input").first.fill(args.types)
                page.locator("#uniner-submit").click()
                page.wait_for_function(  # the answer's status line, or the page's message
                    "() => /⚠|entit/.test(document.querySelector('#uniner-status').innerText)",
                    timeout=300_000)
                print(page.inner_text("#uniner-status").strip())
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            server.terminate()
            server.wait()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
