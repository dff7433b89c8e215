"""The try-it page at `/` of the HTTP server, in a real headless Chromium: it shows what the API answers,
draws the attention with a row per output token and a column per source token, and shows the server's
message for a bad request."""

from __future__ import annotations

import json
import urllib.request

import pytest
from browser import chromium_page
from test_serving_server import server  # noqa: F401 (the real server fixture)

TEXTS = ["september 27, 1994", "MONDAY, NOVEMBER 30, 1992"]


def api(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/v1/generate", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())["outputs"][0]


def generate(page, text: str, method: str = "greedy", **options) -> None:
    page.fill("#source", text)
    page.select_option("#method", method)
    if options:
        page.click("#options-panel summary")
    for name, value in options.items():
        page.fill(f"#option-{name}", str(value))
    page.click("#generate")
    page.wait_for_function("['done', 'error'].includes(document.getElementById('request').dataset.state)")


def test_the_page_shows_what_the_api_answers(server):  # noqa: F811
    _, _, url = server
    with chromium_page() as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('request').dataset.state === 'ready'")
        assert "transformer" in page.inner_text("#model-facts")
        for text in TEXTS:
            generate(page, text)
            expected = api(url, {"inputs": text, "return_attention": True})
            assert page.text_content("#output") == expected["text"]
            assert page.get_attribute("#heatmap", "data-rows") == str(len(expected["tokens"]))
            assert page.get_attribute("#heatmap", "data-columns") == str(len(expected["source_tokens"]))
            assert page.locator("#heatmap .cell").count() == len(expected["tokens"]) * len(expected["source_tokens"])
        generate(page, TEXTS[0], "beam", beam_size=4, num_hypotheses=3)
        expected = api(url, {"inputs": TEXTS[0], "method": "beam", "beam_size": 4, "num_hypotheses": 3,
                             "return_attention_heads": True})
        assert page.text_content("#output") == expected["text"]
        assert page.locator("#nbest li .text").all_text_contents() == [h["text"] for h in expected["hypotheses"]]
        assert page.locator("#nbest li .score").all_text_contents() == [f"{h['score']:.4f}"
                                                                       for h in expected["hypotheses"]]
        # Per layer and head for a Transformer: the mean view, then one per (layer, head).
        layers, heads = len(expected["attention_heads"]), len(expected["attention_heads"][0])
        assert page.locator("#attention-view option").count() == 1 + layers * heads
        page.select_option("#attention-view", "1")
        assert page.locator("#attention-view option").nth(1).inner_text() == "layer 1, head 1"
        cells = len(expected["tokens"]) * len(expected["source_tokens"])
        assert page.locator("#heatmap .cell").count() == cells
        first = page.locator('#heatmap .cell[data-row="0"][data-column="0"]').get_attribute("title")
        assert first.endswith(f"{expected['attention_heads'][0][0][0][0]:.3f}")


@pytest.mark.parametrize("text, options, message", [
    ("   ", {}, "input 0 is empty"),
    ("9/27/94", {"beam_size": 0}, "beam_size must be >= 1"),
    ("9/27/94", {"top_p": 2}, "top_p must be in (0, 1]"),
])
def test_the_page_shows_the_servers_message(server, text, options, message):  # noqa: F811
    _, _, url = server
    with chromium_page() as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('request').dataset.state === 'ready'")
        generate(page, text, **options)
        assert message in page.inner_text("#error") and page.is_visible("#error")


def test_the_page_fits_a_narrow_screen(server):  # noqa: F811
    _, _, url = server
    with chromium_page(width=360, height=740) as page:
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('request').dataset.state === 'ready'")
        generate(page, TEXTS[1])
        assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing sticks out sideways
        assert page.is_visible("#generate") and page.is_visible("#heatmap")
        assert page.text_content("#output") == api(url, {"inputs": TEXTS[1]})["text"]
