"""The dashboard in a real browser: Debian's chromium, driven by Playwright.

``make install-test`` installs both (chromium from apt, playwright from pip; Playwright
downloads no browser). UPDATE_SCREENSHOTS=1 writes the README's screenshots to docs/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from gateway.registry import Registry
from gateway.testing.live import ServerThread
from tests.conftest import GATEWAY_KEY
from tests.dashboard_stack import TEAM_KEY, XSS_METADATA, XSS_SUFFIX, Dashboard, seed, start

DOCS = Path(__file__).resolve().parent.parent / "docs"
STEPS = 40


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make install-test` installs it (apt)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def dashboard(servers: ServerThread, registry: Registry, tmp_path: Path) -> Dashboard:
    return start(servers, registry, tmp_path / "managed")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    opened = context.new_page()
    problems: list[str] = []
    # Answers of 401 (before signing in) and 404 (favicon.ico) are logged too: not these.
    opened.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    opened.on("pageerror", lambda exc: problems.append(str(exc)))
    yield opened
    context.close()
    # No script error and no Content-Security-Policy violation on any page shown.
    assert problems == []


def _screenshot(page: Page, name: str, tmp: Path) -> None:
    target = DOCS if os.environ.get("UPDATE_SCREENSHOTS") else tmp
    page.screenshot(path=str(target / name), full_page=True)


def _sign_in(page: Page, root: str, key: str = GATEWAY_KEY) -> None:
    page.goto(root + "/ui")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#key", key)
    page.click("#login-form button[type=submit]")


def test_dashboard_shows_every_reachable_job_live_and_as_text(
    dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    ids = seed(dashboard, STEPS)
    _sign_in(page, dashboard.root)
    rows = page.locator("#jobs-table tbody tr")
    # Two on openai-main (one is the managed job's, staged there), two on Azure, one managed.
    expect(rows).to_have_count(5)
    assert page.url == dashboard.root + "/ui"  # the key never went into a URL
    providers = {rows.nth(i).get_attribute("data-provider") for i in range(5)}
    assert providers == {"openai", "azure-openai", "portkey"}

    # A <script> in a suffix, markup in metadata: shown as text, never run.
    plotted = page.locator(f"#jobs-table tr[data-job-id='{ids['plotted']}']")
    expect(plotted).to_contain_text(XSS_SUFFIX)
    expect(plotted).to_contain_text(XSS_METADATA)
    assert page.locator("#jobs-table script, #jobs-table img").count() == 0
    assert page.evaluate("window.__xss") is None

    # Filters: by provider, by status.
    page.select_option("#filter-provider", "azure-openai")
    expect(rows).to_have_count(2)
    page.select_option("#filter-status", "failed")
    expect(rows).to_have_count(1)
    page.select_option("#filter-provider", "")
    page.select_option("#filter-status", "")
    expect(rows).to_have_count(5)
    _screenshot(page, "dashboard-jobs.png", tmp_path)

    # A running job finishes upstream: its row changes without a reload.
    page.evaluate("window.__sameDocument = true")
    running = page.locator(f"#jobs-table tr[data-job-id='{ids['running']}']")
    expect(running).to_have_attribute("data-status", "running")
    dashboard.azure.service.set_status(ids["running"], "succeeded", trained_tokens=1234)
    expect(running).to_have_attribute("data-status", "succeeded", timeout=10_000)
    expect(running).to_contain_text("1234")
    assert page.evaluate("window.__sameDocument") is True

    # The job page: the loss chart with every step the fake reported.
    plotted.locator("a").click()
    train = page.locator("#chart-loss polyline[data-series='train_loss']")
    expect(train).to_have_attribute("data-points", str(STEPS))
    assert len((train.get_attribute("points") or "").split()) == STEPS
    valid = page.locator("#chart-loss polyline[data-series='valid_loss']")
    assert len((valid.get_attribute("points") or "").split()) == STEPS // 5
    expect(page.locator("#chart-accuracy polyline")).to_have_count(2)
    expect(page.locator("#checkpoints tbody tr")).to_have_count(2)
    expect(page.locator("#events tbody tr").first).to_be_visible()
    expect(page.locator("#job-hyper")).to_contain_text("n_epochs")
    expect(page.locator("#job-fields")).to_contain_text(XSS_SUFFIX)
    assert page.locator("#job script").count() == 0
    assert page.evaluate("window.__xss") is None
    _screenshot(page, "dashboard-job.png", tmp_path)

    # A failed job's error, as text.
    page.goto(dashboard.root + f"/ui#job/azure-v1/{ids['failed']}")
    expect(page.locator("#job-error")).to_have_text(
        "invalid_training_file: Line 3: <b>not</b> JSON"
    )
    expect(page.locator("#chart-loss")).to_contain_text("No metrics reported.")


def test_dashboard_shows_another_team_none_of_these_jobs(dashboard: Dashboard, page: Page) -> None:
    seed(dashboard, 5)
    _sign_in(page, dashboard.root, TEAM_KEY)
    expect(page.locator("#jobs-count")).to_have_text("0 of 0 jobs, 1 virtual keys")
    expect(page.locator("#jobs-table tbody tr")).to_have_count(0)
    # Its own virtual key has a revoked upstream key: the error is shown, as text.
    expect(page.locator("#jobs-errors li")).to_have_count(1)


def test_dashboard_refuses_a_wrong_key(dashboard: Dashboard, page: Page) -> None:
    _sign_in(page, dashboard.root, "gw-not-a-key-000000000000")
    expect(page.locator("#login-error")).to_have_text("That key was refused.")
