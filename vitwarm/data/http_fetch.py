"""HTTP(S) requests of the data sources, made with urllib so that a failure names the URL and the HTTP status
(webdataset's curl pipe reports only curl's exit status, and has no limit on a transfer that stops moving).

A shard is read through ``HttpStream``: a transfer that goes ``stall_s`` seconds without a byte (a hung
gateway or object-store proxy) or breaks off is asked again from the byte it reached, ``retries`` times, and
then fails naming the URL and how long it stalled.
"""

from __future__ import annotations

import http.client
import io
import urllib.error
import urllib.request
from dataclasses import dataclass

from ..errors import VitwarmError

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


@dataclass(frozen=True)
class HttpLimits:
    """How long a shard transfer may stall, and how often it is asked again (``data.stall_s``, ``data.retries``)."""

    stall_s: float = 60.0
    retries: int = 3


DEFAULT_HTTP = HttpLimits()


class TransferStalled(VitwarmError):
    """A shard transfer stalled (no byte for ``stall_s`` seconds) on every try; the message names the URL."""


class HttpStream(io.RawIOBase):
    """The body at ``url``, read with a limit on the time without a byte (the socket timeout: per read)."""

    def __init__(self, url: str, limits: HttpLimits):
        self.url, self.limits, self.position, self.tries = url, limits, 0, 0
        self.answer = self._ask()

    def _ask(self) -> http.client.HTTPResponse:
        """The answer from byte ``position`` on: a ranged request; a server that ignores ranges sends it all, and
        the bytes already read are skipped."""
        headers = {"Range": f"bytes={self.position}-"} if self.position else {}
        try:
            answer = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers),
                                            timeout=self.limits.stall_s)
            if self.position and answer.status != 206:
                for _ in range(self.position // 65536):
                    answer.read(65536)
                answer.read(self.position % 65536)
            return answer
        except urllib.error.URLError as err:
            if not isinstance(err.reason, TimeoutError):
                raise _failure(self.url, err) from None
            return self._again(err.reason)
        except (TimeoutError, ConnectionError, http.client.IncompleteRead) as err:
            return self._again(err)

    def _again(self, err: BaseException) -> http.client.HTTPResponse:
        """Ask again after ``err``, or fail: a stall as TransferStalled, a broken transfer as an OSError (the
        reader counts it as a shard that broke off)."""
        if self.tries >= self.limits.retries:
            if isinstance(err, TimeoutError):
                raise TransferStalled(
                    f"{self.url} stalled: no byte for {self.limits.stall_s:g} s after {self.position} bytes, on "
                    f"{self.tries + 1} tries (data.stall_s={self.limits.stall_s:g}, data.retries="
                    f"{self.limits.retries}); check the server, or raise them") from None
            raise ConnectionError(f"{self.url} broke off after {self.position} bytes, on {self.tries + 1} tries "
                                  f"({type(err).__name__}: {err})") from None
        self.tries += 1
        return self._ask()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            try:
                # read1: the bytes that have come (readinto would wait to fill the buffer, and lose what came
                # before a stall); an early end of the body is a broken transfer.
                data = self.answer.read1(len(buffer))
                if not data and self.answer.length:
                    raise http.client.IncompleteRead(data, self.answer.length)
                buffer[:len(data)] = data
                self.position += len(data)
                return len(data)
            except (TimeoutError, ConnectionError, http.client.IncompleteRead) as err:
                self.answer.close()
                self.answer = self._again(err)

    def close(self) -> None:
        self.answer.close()
        super().close()


def open_http(url: str, limits: HttpLimits) -> io.BufferedReader:
    """The body at ``url`` as a buffered binary stream with ``limits`` on stalls (see HttpStream)."""
    return io.BufferedReader(HttpStream(url, limits), buffer_size=1 << 16)
