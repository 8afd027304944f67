"""Cursor pagination shared by every list: the request and a page that walks the ones after it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from sharpness_client._http import Request
from sharpness_client.types import JobStatus, Page

T = TypeVar("T")


def list_request(
    path: str,
    *,
    limit: int | None,
    cursor: str | None,
    status: str | JobStatus | None = None,
    labels: Mapping[str, str] | None = None,
) -> Request:
    """GET `path` with the list filters the gateway takes (labels as `key:value`)."""
    params: list[tuple[str, Any]] = [("label", f"{k}:{v}") for k, v in (labels or {}).items()]
    if status is not None:
        params.append(("status", JobStatus(status).value))
    if limit is not None:
        params.append(("limit", limit))
    if cursor is not None:
        params.append(("cursor", cursor))
    return Request("GET", path, params=params)


class PageList(Generic[T]):
    """One page (`items`, `next_cursor`); iterating it walks every page that follows."""

    def __init__(self, page: Page[T], fetch: Callable[[str], Page[T]]) -> None:
        self.page, self.items, self.next_cursor = page, page.items, page.next_cursor
        self._fetch = fetch

    def __iter__(self) -> Iterator[T]:
        page = self.page
        while True:
            yield from page.items
            if not page.next_cursor:
                return
            page = self._fetch(page.next_cursor)


class AsyncPageList(Generic[T]):
    """One page (`items`, `next_cursor`); `async for` walks every page that follows."""

    def __init__(self, page: Page[T], fetch: Callable[[str], Awaitable[Page[T]]]) -> None:
        self.page, self.items, self.next_cursor = page, page.items, page.next_cursor
        self._fetch = fetch

    async def __aiter__(self) -> AsyncIterator[T]:
        page = self.page
        while True:
            for item in page.items:
                yield item
            if not page.next_cursor:
                return
            page = await self._fetch(page.next_cursor)
