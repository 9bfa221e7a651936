"""A screenshot of the HTML report, for the README: renders a saved result to HTML and photographs it in headless
Chromium (playwright driving Debian's ``chromium``).

Usage: python benchmarks/screenshot.py [RESULT.json] [--out docs/report.png] [--width 1200] [--height 1500]
(default RESULT: results/latest.json, what ``make run`` writes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", nargs="?", default="results/latest.json")
    parser.add_argument("--out", default="docs/report.png")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1500, help="pixels from the top of the page")
    args = parser.parse_args()
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        parser.error("no chromium on PATH (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    import xfbench
    from xfbench import reports

    result = xfbench.load(args.result)
    with tempfile.TemporaryDirectory() as folder:
        page_path = os.path.join(folder, "report.html")
        reports.write(result, page_path, "html")
        with sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto("file://" + page_path)
            os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
            page.screenshot(path=args.out, clip={"x": 0, "y": 0, "width": args.width, "height": args.height})
            browser.close()
    print(f"screenshot of the report of {args.result} written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
