"""Take docs/serve_page.png: the page of `anime-cli serve` in headless Debian
chromium after converting a sample photo (the same drive as tests/test_serve_page.py).

    PYTHONPATH=src python docs/make_serve_screenshot.py [PHOTO] [OUT]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from servers import Server  # noqa: E402  (the tests' server in a subprocess)

PHOTO = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "photos" / "astronaut.png"
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "serve_page.png"

server = Server("--quiet")
port = server.port
profile = Path(tempfile.mkdtemp(prefix="anime-cli-chromium-"))
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1100,900", f"--user-data-dir={profile}"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(f"http://127.0.0.1:{port}/")
    wait = WebDriverWait(driver, 300)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#style option"))
    driver.find_element(By.ID, "file").send_keys(str(PHOTO))
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: d.execute_script("const i = document.getElementById('after');"
                                          "return i.complete && i.naturalWidth > 0;"))
    time.sleep(0.5)
    driver.save_screenshot(str(OUT))
finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
    server.stop()
print(OUT)
