"""The lookup client the routes call, always as an async one.

:class:`serving.client.AsyncLookupClient` (what ``python -m serving.api`` and ``reco serve`` use)
answers on the event loop as it is; a blocking :class:`serving.client.LookupClient` still works,
each of its calls then running on the thread pool (:class:`InThreads`), so a slow Redis never
stalls the event loop. The app is given a client or a zero-argument factory of one
(:class:`LazyClient`): a factory is called on the first request that needs a client, so the app
starts even while Redis is down.
"""
from __future__ import annotations

import inspect
from typing import Callable, Optional, Union

from starlette.concurrency import run_in_threadpool

from serving.client import AsyncLookupClient, LookupClient

AnyClient = Union[LookupClient, AsyncLookupClient]
ClientSource = Union[AnyClient, Callable[[], AnyClient]]


class InThreads:
    """A blocking client seen as an async one: every method call runs on the thread pool,
    so a slow Redis never stalls the event loop."""

    def __init__(self, client: LookupClient) -> None:
        self.client = client

    def __getattr__(self, name: str):
        method = getattr(self.client, name)

        async def call(*args, **kwargs):
            return await run_in_threadpool(method, *args, **kwargs)
        return call


def as_async(client) -> Union[AsyncLookupClient, InThreads]:
    if inspect.iscoroutinefunction(getattr(client, "recommendations", None)):
        return client
    return InThreads(client)


class LazyClient:
    """``get_client()``: the app's client, built by the factory on the first call when given one."""

    def __init__(self, source: ClientSource) -> None:
        self._factory: Optional[Callable[[], AnyClient]] = None
        self._client: Optional[Union[AsyncLookupClient, InThreads]] = None
        if callable(source) and not isinstance(source, (LookupClient, AsyncLookupClient)):
            self._factory = source
        else:
            self._client = as_async(source)

    def __call__(self) -> Union[AsyncLookupClient, InThreads]:
        # Called on the event loop only, so no lock: the factory runs once (it connects lazily).
        client = self._client
        if client is None:
            client = self._client = as_async(self._factory())  # type: ignore[misc]
        return client
