"""Fixtures of the browser tests (tests/plugin/test_app_*browser.py): a headless Chromium, and a
page in a fresh context that records what the App sent and the page's errors."""

from .app_browser import browser, page  # noqa: F401 - fixtures
