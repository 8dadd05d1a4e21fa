"""The web page end to end in headless Chromium: type a post, pick an image, submit, read the
predicted place from the page. Needs Debian's chromium and chromium-driver (.ci/run installs
them); skipped outside CI when they are missing, required in CI."""

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
def server(predictor):
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(predictor=predictor), host="127.0.0.1", port=port,
                            log_level="warning")
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


def test_page_predicts_a_post(server, browser, demo_folder, predictor, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "text").send_keys("今天在健身房跑步机上跑了五公里")
    browser.find_element(By.ID, "image").send_keys(str(demo_folder / "images" / "gym-000.jpg"))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(ec.visibility_of_element_located((By.ID, "result")))
    place = browser.find_element(By.ID, "label").text
    assert place in predictor.labels
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert sorted(bar.get_attribute("data-label") for bar in bars) == sorted(predictor.labels)
    assert bars[0].get_attribute("data-label") == place  # bars sorted, the prediction first
    browser.save_screenshot(str(tmp_path / "page.png"))


def test_page_shows_errors(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    browser.find_element(By.ID, "text").send_keys("[哈哈]")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "error").text != "")
    assert "non-empty after cleaning" in browser.find_element(By.ID, "error").text
