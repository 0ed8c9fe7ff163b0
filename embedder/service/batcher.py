"""Micro-batching: concurrent requests share one model call.

One text per request is the common shape of online traffic, and a model call on one text wastes
almost all of its fixed cost. Requests wait in a bounded queue; when one of `workers` model
threads is free, the batcher takes the first waiting request, everything else already queued (up
to `max_batch` texts), and for at most `max_wait` seconds whatever arrives next, then encodes the
lot in one `Model.features` call on that thread, off the event loop. With two threads one batch
fills while the other is encoded, which on 2 cores served 1.35× what a single thread did in the
recorded run (RESULTS.md). A full queue refuses new work at once (the caller answers 429) rather
than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from ..encoders.model import Model


class Overloaded(Exception):
    """The queue holds as many texts as it may; try again later."""


@dataclass
class _Job:
    encoder: str
    texts: list[str]
    order: bool
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, model: Model, max_batch: int, max_wait: float, max_queue: int, workers: int,
                 on_batch: Callable[[int], None] | None = None,
                 on_queue: Callable[[int], None] | None = None):
        self.model, self.workers = model, workers
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait, max_queue
        self.on_batch, self.on_queue = on_batch, on_queue
        self.queued = 0  # texts waiting, across jobs
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encode")
        self.task: asyncio.Task | None = None
        self.running: set[asyncio.Task] = set()

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        for task in [self.task, *self.running]:
            if task:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self.executor.shutdown(wait=True)

    async def features(self, texts: list[str], encoder: str, order: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        """(unit vectors, order scores, tokens read) for `texts`, computed with whatever else is
        waiting (the scores are NaN unless some request of the batch asked for them)."""
        V, O, n = await self.features_each(texts, encoder, order)
        return V, O, int(n.sum())

    async def features_each(self, texts: list[str], encoder: str, order: bool = False
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`features`, with the pieces read counted per text (what a front process needs to split
        a batch it sent to the shared model among its requests: `shared_model.py`)."""
        if self.queued and self.queued + len(texts) > self.max_queue:
            raise Overloaded(f"{self.queued} texts are waiting to be encoded (the limit is {self.max_queue})")
        job = _Job(encoder, texts, order, asyncio.get_running_loop().create_future())
        self.queued += len(texts)
        self._report_queue()
        self.queue.put_nowait(job)
        return await job.future

    def _features(self, texts: list[str], encoder: str, order: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = self.model.tokens(texts, encoder)
        V, O = self.model.features_of_tokens(ids, encoder, order=order)  # a big request: the device's batches
        return V, O, np.array([len(x) for x in ids])

    def _report_queue(self) -> None:
        if self.on_queue:
            self.on_queue(self.queued)

    async def _gather(self) -> list[_Job]:
        jobs = [await self.queue.get()]
        n = len(jobs[0].texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while n < self.max_batch:
            try:
                job = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            jobs.append(job)
            n += len(job.texts)
        return jobs

    async def _run(self) -> None:
        """Gather a batch whenever a model thread is free: with one thread, requests pile up while
        it works and the next batch is bigger; with more, one batch fills while another runs."""
        loop = asyncio.get_running_loop()
        free = asyncio.Semaphore(self.workers)
        while True:
            await free.acquire()
            jobs = await self._gather()
            self.queued -= sum(len(j.texts) for j in jobs)
            self._report_queue()
            task = loop.create_task(self._encode(jobs))
            self.running.add(task)
            task.add_done_callback(lambda t: (self.running.discard(t), free.release()))

    async def _encode(self, jobs: list[_Job]) -> None:
        loop = asyncio.get_running_loop()
        by_encoder: dict[str, list[_Job]] = {}
        for j in jobs:
            by_encoder.setdefault(j.encoder, []).append(j)
        for encoder, group in by_encoder.items():
            texts = [t for j in group for t in j.texts]
            if self.on_batch:
                self.on_batch(len(texts))
            try:
                order = any(j.order for j in group)
                V, O, n = await loop.run_in_executor(self.executor, self._features, texts, encoder, order)
            except Exception as e:  # every waiting request gets the failure, the worker goes on
                for j in group:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            start = 0
            for j in group:
                end = start + len(j.texts)
                if not j.future.done():  # a client that went away has a cancelled future
                    j.future.set_result((V[start:end], O[start:end], n[start:end]))
                start = end
