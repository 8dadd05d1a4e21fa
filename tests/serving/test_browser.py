"""The web page end to end in headless Chromium: the run's labels and example posts, an example
clicked into the text, the image previewed before it is sent, the prediction with its set and
bars, errors; a screenshot is written to a temp folder. Needs Debian's chromium,
chromium-driver and fonts-noto-cjk (.ci/run installs them); skipped outside CI when they are
missing, required in CI."""

import os
import shutil
import socket
import threading
import time

import pytest

from sgmft.serving.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MISSING = not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER))
pytestmark = pytest.mark.skipif(MISSING and os.environ.get("CI") != "true",
                                reason="chromium/chromedriver not installed (CI installs them)")


@pytest.fixture(scope="module")
def server(fallback_predictor):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(predictor=fallback_predictor, coverage=0.9), host="127.0.0.1",
                            port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started and time.time() < deadline:
        time.sleep(0.05)
    assert instance.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield driver
    driver.quit()


def test_page_predicts_a_post(server, browser, demo_folder, fallback_predictor, tmp_path_factory):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    labels = fallback_predictor.labels
    browser.set_window_size(390, 1400)              # a phone's width
    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.ID, "labels").text != "…")
    assert browser.find_element(By.ID, "labels").text == ", ".join(labels)
    examples = browser.find_elements(By.CSS_SELECTOR, "#examples .example")
    assert examples and {e.get_attribute("data-label") for e in examples} <= set(labels)
    examples[0].click()
    text = browser.find_element(By.ID, "text").get_attribute("value")
    assert text and text in examples[0].text
    browser.find_element(By.ID, "image").send_keys(str(demo_folder / "images" / "gym-000.jpg"))
    preview = browser.find_element(By.ID, "preview")
    wait.until(lambda d: preview.is_displayed() and preview.get_attribute("src").startswith("blob:"))
    assert "gym-000.jpg" in preview.get_attribute("alt")
    browser.find_element(By.ID, "submit").click()
    wait.until(ec.visibility_of_element_located((By.ID, "result")))
    answer = browser.find_element(By.ID, "answer").get_attribute("data-label")
    assert answer in labels or answer == "unsure"
    set_line = browser.find_element(By.ID, "set")
    size = int(set_line.get_attribute("data-size"))
    assert size >= 1 and (("One of: " in set_line.text) == (size > 1))
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert sorted(bar.get_attribute("data-label") for bar in bars) == sorted(labels)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar.in-set")) == size
    assert "alone" in browser.find_element(By.ID, "evidence").text
    for name in browser.find_elements(By.CSS_SELECTOR, "#bars .bar .name"):   # no "restau..."
        assert browser.execute_script("return arguments[0].scrollWidth <= arguments[0].clientWidth", name)
    # clearing the chosen image hides the preview (no broken-image icon)
    browser.execute_script("const i = document.getElementById('image'); i.value = '';"
                           "i.dispatchEvent(new Event('change'));")
    wait.until(lambda d: not preview.is_displayed())
    shot = tmp_path_factory.mktemp("screenshots") / "page.png"
    browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"


def test_page_shows_errors(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "text").send_keys("[哈哈]")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text != "")
    assert "non-empty after cleaning" in browser.find_element(By.ID, "error").text
