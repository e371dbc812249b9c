"""HTTP(S) requests of the data sources, made with urllib so that a failure names the URL and the HTTP status
(webdataset's curl pipe, which reads the shards, reports only curl's exit status)."""

from __future__ import annotations

import urllib.error
import urllib.request

HTTP_SCHEMES = ("http", "https")
TIMEOUT_S = 60  # seconds one request may take to answer


def _failure(url: str, err: urllib.error.URLError) -> FileNotFoundError:
    if isinstance(err, urllib.error.HTTPError):
        return FileNotFoundError(f"{url} answered HTTP {err.code} ({err.reason})")
    return FileNotFoundError(f"cannot connect to {url} ({err.reason})")


def http_get(url: str) -> bytes:
    """The body at ``url``; FileNotFoundError naming the URL and the HTTP status, or why no answer came."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as answer:
            return answer.read()
    except urllib.error.URLError as err:
        raise _failure(url, err) from None


def http_check_there(url: str) -> None:
    """FileNotFoundError when the server says ``url`` is not there (404, 410) or cannot be reached; asked with
    HEAD, so nothing is downloaded. Other answers (a server refusing HEAD, say) are left to the reader."""
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=TIMEOUT_S).close()
    except urllib.error.HTTPError as err:
        if err.code in (404, 410):
            raise _failure(url, err) from None
    except urllib.error.URLError as err:
        raise _failure(url, err) from None
