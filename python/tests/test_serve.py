"""`idx-softmax serve` from the outside: tritonclient's HTTP client against
the Open Inference Protocol endpoints, and the drawing page in a real
browser (headless Chromium driven by Selenium).

The model is trained here by the CLI on the bundled MNIST (a 784-64-10 MLP,
2 epochs: a few seconds). Under CI=true a missing prerequisite (tritonclient,
selenium, chromium, chromedriver) fails the test; elsewhere it skips.
"""

import importlib
import json
import os
import pathlib
import signal
import subprocess

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def prerequisite(what):
    message = f"{what} is needed for the server tests"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def need(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        prerequisite(f"the Python package {module.split('.')[0]}")


@pytest.fixture(scope="session")
def model(cli, tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "digits.safetensors"
    subprocess.run(
        [str(cli), "--hidden", "64", "--epochs", "2", "--save", str(path), "--json"],
        check=True,
        capture_output=True,
    )
    return path


class Server:
    """A running `idx-softmax serve` on a free port."""

    def __init__(self, cli, model, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [str(cli), "serve", "--model", str(model), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.first_line = self.proc.stdout.readline()
        assert " on http://" in self.first_line, self.first_line + self.logged()
        self.url = self.first_line.strip().rsplit(" on ", 1)[1]
        self.hostport = self.url.removeprefix("http://")

    def logged(self):
        self.log.flush()
        return pathlib.Path(self.log_path).read_text()

    def stop(self):
        """SIGTERM; the server finishes what is in flight and exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(cli, model, tmp_path_factory):
    s = Server(cli, model, tmp_path_factory.mktemp("serve-log") / "stderr.txt")
    yield s
    code = s.stop()
    assert code == 0, s.logged()


def test_first_line_names_the_model_and_address(server, model):
    assert server.first_line.startswith(f"serving {model} as digits on http://127.0.0.1:")


def test_tritonclient_infer_gives_the_cli_predictions(server, model, mnist, cli):
    httpclient = need("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    from idx_softmax import MLPClassifier

    client = httpclient.InferenceServerClient(url=server.hostport)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]}]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "logits"]
    assert client.get_server_metadata()["name"] == "idx-softmax"

    _, _, X_test, y_test = mnist
    n = 100
    x = X_test[:n].astype(np.float32) / np.float32(255)
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
        httpclient.InferRequestedOutput("logits", binary_data=False),
    ]
    result = client.infer("digits", [inp], outputs=outputs, request_id="batch-1")
    probs = result.as_numpy("probabilities")
    logits = result.as_numpy("logits")
    assert probs.shape == (n, 10) and probs.dtype == np.float32
    assert logits.shape == (n, 10)
    assert result.get_response()["id"] == "batch-1"

    # The CLI's predictions: `predict --test-index` runs eval's forward pass.
    out = subprocess.run(
        [str(cli), "predict", "--model", str(model), "--json",
         "--test-index", ",".join(map(str, range(n)))],
        check=True, capture_output=True, text=True,
    ).stdout
    cli_pred = [json.loads(line)["predicted"] for line in out.splitlines()]
    np.testing.assert_array_equal(probs.argmax(axis=1), cli_pred)
    # The library's probabilities (the Python package on the same model).
    lib = MLPClassifier.load(model).predict_proba(X_test[:n])
    np.testing.assert_allclose(probs, lib, atol=1e-5, rtol=0)
    assert (probs.argmax(axis=1) == y_test[:n]).mean() > 0.85

    # tritonclient's defaults ask for every output in binary: answered as
    # JSON, which it reads all the same.
    default = client.infer("digits", [inp])
    np.testing.assert_array_equal(default.as_numpy("probabilities"), probs)

    # Binary inputs are refused with a clear 400.
    binary = httpclient.InferInput("input", list(x.shape), "FP32")
    binary.set_data_from_numpy(x, binary_data=True)
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits", [binary], outputs=outputs)
    assert e.value.status() == "400"
    assert "binary tensor data is not supported" in e.value.message()
    # A wrong shape names the field.
    bad = httpclient.InferInput("input", [1, 100], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 100), np.float32), binary_data=False)
    with pytest.raises(InferenceServerException) as e:
        client.infer("digits", [bad], outputs=outputs)
    assert e.value.status() == "400"
    assert e.value.message().startswith("inputs[0].shape: must be [n, 784]")
    # And the server goes on serving.
    again = client.infer("digits", [inp], outputs=outputs)
    np.testing.assert_array_equal(again.as_numpy("probabilities"), probs)
    client.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = need("selenium.webdriver")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not os.access(exe, os.X_OK):
            prerequisite(exe + " (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1024,768",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def draw(driver, points):
    """One stroke through `points`, offsets from the pad's centre (CSS px)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    pad = driver.find_element(By.ID, "pad")
    chain = ActionChains(driver, duration=10)
    (x0, y0), rest = points[0], points[1:]
    chain.move_to_element_with_offset(pad, x0, y0).click_and_hold()
    for x, y in rest:
        chain.move_to_element_with_offset(pad, x, y)
    chain.release().perform()


def prediction_after(driver, before):
    """The text of #prediction once it differs from `before` (10 s at most)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    el = driver.find_element(By.ID, "prediction")
    WebDriverWait(driver, 10).until(lambda _: el.text != before)
    return el.text


def test_the_page_reads_a_drawn_digit(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    assert browser.find_element(By.ID, "prediction").text == ""
    # A vertical stroke is a 1.
    draw(browser, [(0, y) for y in range(-90, 91, 15)])
    assert prediction_after(browser, "") == "1"
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .track")
    assert len(bars) == 10
    # The picture the model saw is drawn: some of its pixels are lit.
    lit = browser.execute_script(
        "const c = document.getElementById('seen');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++; return [c.width, n];"
    )
    assert lit[0] == 28 and 10 < lit[1] < 200, lit

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "prediction").text == ""
    assert browser.find_elements(By.CSS_SELECTOR, "#bars .track") == []

    # A loop is a 0.
    loop = [
        (round(55 * np.sin(t)), round(-85 * np.cos(t)))
        for t in np.linspace(0, 2 * np.pi, 33)
    ]
    draw(browser, loop)
    assert prediction_after(browser, "") == "0"
    log = server.logged()
    assert "POST /predict?probs=1&preprocessed=1 200" in log, log
