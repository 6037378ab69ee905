"""The totals of the fault suite: every test marked ``fault`` is one case.

A case *survived* when its test passed: the damage or misuse was met with a clear
message, 4xx JSON or a skipped record, and nothing else was lost. The probes below
count, across the session, the answers of 500 or more and the servers that died;
the tests assert both stay at 0. ``tests/conftest.py`` prints the totals at the end
of a session that ran fault cases::

    python -m pytest tests -m fault
    # ... fault suite: N cases, N survived, 0 answers 5xx, 0 crashes
"""

from __future__ import annotations

import requests

TOTALS = {"cases": 0, "survived": 0, "5xx": 0, "crashes": 0}


def get(url: str, **params) -> requests.Response | None:
    """GET ``url``; None (counted as a crash) when the server no longer answers."""
    try:
        response = requests.get(url, params=params, timeout=60)
    except requests.ConnectionError:
        TOTALS["crashes"] += 1
        return None
    if response.status_code >= 500:
        TOTALS["5xx"] += 1
    return response


def line() -> str:
    t = TOTALS
    return (
        f"fault suite: {t['cases']} cases, {t['survived']} survived, "
        f"{t['5xx']} answers 5xx, {t['crashes']} crashes"
    )
