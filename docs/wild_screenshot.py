"""Screenshot a ``sparsegap activations --interpret`` feature browser in headless Chromium.

Opens ``OUT/interpret/METHOD.html`` from its file URL in Debian's Chromium (driven by
playwright, no browser download), fails on any console error or network request, sorts
the list by F1, opens the best-scored feature's page and saves a PNG::

    python docs/wild_screenshot.py sparsegap-activations mlp docs/_static/wild_browser.png
"""

import argparse
import shutil
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the --out directory of sparsegap activations --interpret")
    parser.add_argument("method", help="method whose browser to open, e.g. mlp")
    parser.add_argument("png", help="where to save the screenshot")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    page_path = (Path(args.out) / "interpret" / f"{args.method}.html").resolve()
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}")
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto(page_path.as_uri())
            page.wait_for_selector(".row")
            header = page.locator('#list-header div[data-key="f1"]')
            if header.count():
                header.click()  # sort by F1 (twice: highest first)
                header.click()
            page.locator(".row").first.click()
            page.wait_for_selector(".context")
            page.screenshot(path=args.png, type="png")
        finally:
            browser.close()
    if errors:
        raise SystemExit(f"browser errors: {errors}")
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
