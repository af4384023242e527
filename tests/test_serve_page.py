"""The page at / in a real headless browser (Debian's chromium through
chromedriver): upload a sample photo, see the result load at the right size,
with nothing fetched from anywhere but the server."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from servers import Server, photo_bytes

pytest.importorskip("starlette")
webdriver = pytest.importorskip("selenium.webdriver")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,900"]


def browser(profile: Path):
    """Chromium from the system, its driver from the system: nothing downloaded
    (given both paths, Selenium never runs its manager)."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_the_page_converts_a_photo(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "coffee.jpg"
    photo.write_bytes(photo_bytes(size=(320, 240)))
    server = Server()
    profile = Path(tempfile.mkdtemp(prefix="anime-cli-chromium-"))
    driver = browser(profile)
    try:
        origin = f"http://127.0.0.1:{server.port}"
        driver.get(origin + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style option"))
        assert driver.find_element(By.ID, "style").get_attribute("value") == "hayao"
        driver.find_element(By.ID, "file").send_keys(str(photo))
        side = driver.find_element(By.ID, "max_side")
        side.clear()
        side.send_keys("160")
        driver.find_element(By.ID, "go").click()
        wait.until(lambda d: d.execute_script("const i = document.getElementById('after');"
                                              "return i.complete && i.naturalWidth > 0;"))
        size = driver.execute_script("const i = document.getElementById('after'); return [i.naturalWidth, i.naturalHeight];")
        assert size == [160, 120]
        before = driver.execute_script("const i = document.getElementById('before'); return [i.naturalWidth, i.naturalHeight];")
        assert before == [320, 240]
        line = driver.find_element(By.ID, "line").text
        assert "coffee.jpg" in line and "320x240 -> 160x120" in line and "stylize" in line
        link = driver.find_element(By.ID, "download")
        assert link.is_displayed() and link.get_attribute("download") == "coffee_anime.jpg"
        fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched and all(u.startswith(origin) or u.startswith("blob:") for u in fetched), fetched
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        assert server.stop() == 0, server.stderr
