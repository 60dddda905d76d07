import logging

import pytest


@pytest.fixture
def logs(caplog):
    """Every record at the CLI's level (INFO), from every logger (aiohttp's and asyncio's too)."""
    caplog.set_level(logging.INFO)
    return caplog
