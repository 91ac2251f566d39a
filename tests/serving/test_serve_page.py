"""The web page in a real headless browser (Debian's chromium + chromium-driver, through selenium): a
click on a cell gets the model's move on the board, a chat message gets its streamed answer.

Skipped where chromium, its driver or selenium is missing. ``MINIGPT_UPDATE_SCREENSHOT=1`` also writes the
screenshot to docs/img/serve.png (the README's picture); otherwise it goes to the test's temporary folder."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from serve_support import SCRIPTED_ANSWER

from minigpt.serving.serve_command import build_app

ROOT = Path(__file__).resolve().parents[2]
BROWSER = next((p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser():
    if BROWSER is None or DRIVER is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,720"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    yield driver
    driver.quit()


def _wait_for(driver, condition, what: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        lambda d: condition(d), message=f"timed out waiting for {what}"
    )


def _small_png(png: bytes) -> bytes:
    """The screenshot with a 64-colour palette: a flat page loses nothing visible and the file shrinks."""
    from PIL import Image

    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(64).save(out, format="PNG", optimize=True)
    return out.getvalue()


def test_play_a_move_and_chat_in_the_browser(browser, start_server, scripted_model_dir, tmp_path):
    from selenium.webdriver.common.by import By

    server = start_server(build_app(scripted_model_dir, model_name="tictactoe-sft", device="cpu"))
    browser.get(server.url + "/")
    text = lambda css: browser.find_element(By.CSS_SELECTOR, css).text  # noqa: E731
    _wait_for(browser, lambda d: text("#model-name") == "tictactoe-sft", "the model's name")
    assert text("#ttt-status") == "Your move: click a cell."

    browser.find_element(By.ID, "cell-0").click()
    _wait_for(browser, lambda d: text("#cell-4") == "O", "the model's mark in the centre")
    assert [text(f"#cell-{i}") for i in range(9)] == ["X", "", "", "", "O", "", "", "", ""]
    assert text("#ttt-status") == "The model played 4. Your move."
    assert text("#ttt-answer") == f"model: {SCRIPTED_ANSWER}"
    assert not browser.find_element(By.ID, "cell-4").is_enabled()

    browser.find_element(By.ID, "prompt").send_keys("Your move?")
    browser.find_element(By.ID, "send").click()
    # The answer is complete when the Send button is enabled again (its stream has ended).
    _wait_for(browser, lambda d: d.find_element(By.ID, "send").is_enabled(), "the end of the chat answer")
    assert text(".msg.user") == "Your move?" and text(".msg.assistant") == SCRIPTED_ANSWER, text("#log")

    png = _small_png(browser.get_screenshot_as_png())
    assert png.startswith(b"\x89PNG") and len(png) < 200_000
    target = (
        ROOT / "docs/img/serve.png" if os.environ.get("MINIGPT_UPDATE_SCREENSHOT") else tmp_path / "serve.png"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
