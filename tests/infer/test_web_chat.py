"""The web chat at GET /, in a real headless Chromium (Debian's, driven by Playwright) against a real
`scratchlm serve`: a typed message streams its answer in, turn after turn, and the answers are the ones
the API gives for the same conversation."""

import shutil

import pytest
from openai import OpenAI

from live_server import make_run, start_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install -y chromium)")

KEY = "web-key"
SYSTEM = "You are terse."
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus_jsonl):
    """A 512-token context, so that an answer runs long enough to be stopped half way."""
    run = make_run(tmp_path_factory.mktemp("web") / "webrun", corpus_jsonl, 512)
    live = start_server(run, tmp_path_factory.mktemp("log") / "serve.log", "--api-key", KEY)
    yield live
    assert live.stop() == 0, live.log.read_text()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """The chat page, given the API key, greedy (temperature 0) and with a system prompt."""
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    page.goto(server.url + "/")
    page.fill("#api-key", KEY)
    page.press("#api-key", "Tab")  # a change event: the page connects with the key
    page.wait_for_function("document.getElementById('status').textContent.startsWith('model webrun')")
    page.eval_on_selector("#temperature", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
    page.fill("#system", SYSTEM)
    yield page
    page.close()


def api_answer(server, messages: list[dict], max_tokens: int) -> str:
    client = OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    done = client.chat.completions.create(model="webrun", messages=messages, temperature=0, max_tokens=max_tokens)
    return done.choices[0].message.content


def plain(text: str) -> str:
    """What an HTML page can show of a text: the parser turns carriage returns into newlines and NUL into
    the replacement character."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")


def ask(page, text: str) -> tuple[str, list[int]]:
    """Send a message; return the finished answer as shown and the lengths it was shown at on the way."""
    page.evaluate("""() => {
        window.shownLengths = [];
        new MutationObserver(() => {
            const answers = document.querySelectorAll('.msg.assistant');
            const last = answers[answers.length - 1];
            if (last && last.dataset.state === 'streaming') window.shownLengths.push(last.textContent.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    count = page.locator(".msg.assistant").count()
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    answer = page.locator(".msg.assistant").nth(count)
    answer.and_(page.locator("[data-state=done]")).wait_for(timeout=60_000)
    shown = answer.evaluate("el => [...el.childNodes].filter(n => !n.classList || !n.classList.contains('note'))"
                            ".map(n => n.textContent).join('')")
    return shown, page.evaluate("window.shownLengths")


def test_a_conversation_streams_turn_after_turn(page, server, tmp_path):
    page.fill("#max-tokens", "40")
    first, lengths = ask(page, "the cat sat on")
    history = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "the cat sat on"}]
    want = api_answer(server, history, 40)
    assert first == plain(want) and first
    assert len(set(lengths)) > 2  # the answer grew on screen piece by piece, not in one go
    assert "tokens/s" in page.locator(".msg.assistant .note").first.text_content()

    second, _ = ask(page, "and then?")  # the page sends the whole conversation, its answer included
    history += [{"role": "assistant", "content": want}, {"role": "user", "content": "and then?"}]
    assert second == plain(api_answer(server, history, 40))
    assert page.locator(".msg.user").count() == 2
    page.screenshot(path=str(tmp_path / "web_chat.png"))
    assert (tmp_path / "web_chat.png").stat().st_size > 10_000


def test_new_chat_forgets_the_conversation(page, server):
    page.fill("#max-tokens", "20")
    ask(page, "the cat sat on")
    page.click("#new-chat")
    assert page.locator(".msg").count() == 0
    again, _ = ask(page, "the dog ran")
    assert again == plain(api_answer(server, [{"role": "system", "content": SYSTEM},
                                              {"role": "user", "content": "the dog ran"}], 20))


def test_the_oldest_exchange_goes_when_the_context_is_full(page, server):
    """Two answers of 300 tokens do not fit in a 512-token context together: the second turn is sent
    without the first exchange, and the page says so."""
    page.fill("#max-tokens", "300")
    ask(page, "the cat sat on")
    second, _ = ask(page, "the dog ran")
    assert second == plain(api_answer(server, [{"role": "system", "content": SYSTEM},
                                               {"role": "user", "content": "the dog ran"}], 300))
    assert "no longer fit" in page.locator(".msg.assistant").nth(1).locator(".note").first.text_content()


def test_stop_aborts_the_answer_and_frees_the_server(page, server):
    """Stop is pressed the moment the first piece of the answer shows (from inside the page: a round trip
    from here could come after the whole answer)."""
    before = server.metrics()["scratchlm_generation_tokens_total"]
    page.evaluate("""() => new MutationObserver((_, observer) => {
        const answer = document.querySelector('.msg.assistant');
        if (answer && answer.textContent.length > 0) { observer.disconnect(); document.getElementById('stop').click(); }
    }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true})""")
    page.fill("#prompt", "the cat sat on")
    page.press("#prompt", "Enter")
    answer = page.locator(".msg.assistant")
    answer.and_(page.locator("[data-state=done]")).wait_for()
    assert answer.locator(".note").text_content() == "stopped"
    assert page.locator("#send").is_visible() and not page.locator("#stop").is_visible()
    server.wait_idle()
    assert server.metrics()["scratchlm_generation_tokens_total"] - before < 200  # of the 256 asked for


def test_code_blocks_are_escaped_and_fenced(page):
    html = page.evaluate("renderText('a <b> & ```py\\nif x < 1:\\n    y()\\n``` <script>')")
    assert html == ('a &lt;b&gt; &amp; <pre><code data-lang="py">if x &lt; 1:\n    y()</code></pre> '
                    '&lt;script&gt;')
    assert page.evaluate("renderText('open ```\\nstill streaming')") == \
        'open <pre><code data-lang="">still streaming</code></pre>'


def test_the_page_fetches_nothing_from_elsewhere(browser, server):
    page = browser.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(server.url + "/")
    page.wait_for_load_state("networkidle")
    page.close()
    assert requested and all(url.startswith(server.url) for url in requested)
