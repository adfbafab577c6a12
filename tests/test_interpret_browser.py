"""The static feature browser, opened from a file:// URL in headless Chromium.

Needs Debian's ``chromium`` and the ``playwright`` package (its own browser download is
not used: Chromium is launched from /usr/bin/chromium); skipped with the reason otherwise.
"""

import json
import os
import re
import shutil

import numpy as np
import pytest
from _interpret_data import (
    BIGRAM,
    DEAD_LATENT,
    FIRES_ON,
    TOKEN_LATENT,
    VOCAB,
    KnownLatents,
    make_activations,
    make_tokens,
)

from sklearn_sparsegap.interpret import (
    NGramExplainer,
    compute_feature_statistics,
    explain_and_score,
    write_feature_browser,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
SCREENSHOT = os.path.join(os.path.dirname(__file__), "..", "docs", "_static",
                          "interpret_browser.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    metadata = make_tokens(n_documents=80)
    X = make_activations(metadata)
    W_U = np.random.default_rng(0).normal(size=(len(VOCAB), X.shape[1]))
    stats = compute_feature_statistics(KnownLatents(), X, metadata, vocabulary=VOCAB,
                                       W_U=W_U, n_top=10, n_random=40)
    results = explain_and_score(stats, NGramExplainer(), protocol="delphi", min_firing=10)
    path = tmp_path_factory.mktemp("browser") / "features.html"
    write_feature_browser(stats, path, results=results, title="Known latents")
    return stats, results, path


def _embedded(path, element_id):
    text = path.read_text(encoding="utf-8")
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>',
                      text, flags=re.S)
    return json.loads(match.group(1))


def test_report_is_self_contained_with_lazy_per_feature_data(report):
    stats, results, path = report
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "src=" not in text
    index = _embedded(path, "sg-index")
    assert index["id"] == list(range(stats.n_latents))
    assert index["dead"][DEAD_LATENT] and "never fires" in index["text"][DEAD_LATENT]
    first_f1 = results["f1"][results["latent"].index(TOKEN_LATENT)]
    assert index["f1"][TOKEN_LATENT] == pytest.approx(first_f1)
    features = _embedded(path, "sg-features")
    assert all(isinstance(f, str) for f in features)  # parsed only when opened
    token_feature = json.loads(features[TOKEN_LATENT])
    strings = index["strings"]
    tokens, acts, centre = token_feature["top"][0]
    assert strings[tokens[centre]] == VOCAB[FIRES_ON] and acts[centre] > 0
    assert len(token_feature["lt"]) == 10


def test_a_token_that_spells_markup_cannot_break_the_page(tmp_path):
    vocabulary = ["</script><script>alert(1)</script>", "__SPARSEGAP_INDEX__", "b"]

    class Relu:
        components_ = np.eye(1)

        def transform(self, X):
            return np.maximum(X, 0)

    X = np.array([[1.0], [0.0], [2.0]])
    metadata = {"document": [0, 0, 0], "position": [0, 1, 2], "token": [0, 1, 2]}
    stats = compute_feature_statistics(Relu(), X, metadata, vocabulary=vocabulary)
    path = tmp_path / "f.html"
    write_feature_browser(stats, path)
    assert path.read_text().count("</script>") == 3  # the page's own three scripts
    assert vocabulary[0] in _embedded(path, "sg-index")["strings"]


def _browser():
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return playwright


def test_report_in_headless_chromium(report):
    """Loads without console errors or network requests; search, sort and a feature page
    with shaded tokens work. ``SPARSEGAP_UPDATE_SCREENSHOT=1`` rewrites the screenshot in
    docs/_static."""
    stats, _, path = report
    sync_api = _browser()
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}")
                    if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri())
            page.wait_for_selector(".row")
            assert page.locator(".row").count() == stats.n_latents
            assert "5 of 5 features" in page.text_content("#count")
            # Search filters the list.
            page.fill("#search", f'"{VOCAB[BIGRAM[0]]}", "{VOCAB[BIGRAM[1]]}"')
            assert page.locator(".row").count() == 1
            page.fill("#search", "never fires")
            rows = page.locator(".row")
            assert rows.count() == 1 and rows.first.text_content().startswith(str(DEAD_LATENT))
            page.fill("#search", "")
            # Sorting by frequency puts the most frequent latent first.
            page.click('#list-header div[data-key="freq"]')
            first = int(page.locator(".row").first.locator("div").first.text_content())
            assert first == int(np.argmax(stats.frequency))
            # A feature page shows token-level shading on its contexts.
            page.click(f'.row[data-i="{TOKEN_LATENT}"]')
            page.wait_for_selector(".context")
            active = page.locator(".tok.active")
            assert active.count() >= 10
            assert VOCAB[FIRES_ON] in active.first.text_content()
            style = active.first.get_attribute("style")
            assert "rgba(255, 90, 0" in style
            assert page.locator("svg.histogram rect").count() == stats.histogram_counts.shape[1]
            assert "N-gram explanation" in page.text_content("table.scores")
            assert page.locator(".logits li").count() == 20
            page.set_viewport_size({"width": 1000, "height": 560})
            shot = page.screenshot(type="png")
            assert shot.startswith(b"\x89PNG")
            if os.environ.get("SPARSEGAP_UPDATE_SCREENSHOT"):  # refresh the docs' picture
                with open(SCREENSHOT, "wb") as handle:
                    handle.write(shot)
            page.goto(path.as_uri() + f"#feature-{DEAD_LATENT}")
            page.wait_for_selector("#feature h2")
            assert "never fires" in page.text_content("#feature")
        finally:
            browser.close()
    assert errors == []


def test_ten_thousand_latents_stay_light(tmp_path):
    """The list is virtualised: a 10,000-latent report keeps only the rows in view."""
    sync_api = _browser()
    n_latents = 10_000
    rng = np.random.default_rng(0)

    class Sparse:
        components_ = np.eye(n_latents, 8)

        def transform(self, X):
            codes = np.zeros((len(X), n_latents))
            rows = np.arange(len(X))
            codes[rows, (rows * 7919) % n_latents] = 1.0 + X[:, 0]
            return codes

    n = 2000
    X = rng.uniform(size=(n, 8))
    metadata = {"document": np.arange(n) // 100, "position": np.arange(n) % 100,
                "token": rng.integers(0, 50, n)}
    stats = compute_feature_statistics(Sparse(), X, metadata,
                                       vocabulary=[f"t{i}" for i in range(50)],
                                       n_top=3, n_per_quantile=1, n_random=2,
                                       batch_size=1000)
    path = tmp_path / "big.html"
    write_feature_browser(stats, path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(path.as_uri())
            page.wait_for_selector(".row")
            assert f"{n_latents} of {n_latents} features" in page.text_content("#count")
            assert page.locator(".row").count() < 100
            page.evaluate("document.getElementById('viewport').scrollTop = 24 * 9000")
            page.wait_for_selector('.row[data-i="9000"]')
        finally:
            browser.close()

