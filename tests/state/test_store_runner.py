"""StoreRunner: one thread per store, the store's connection made and closed on it."""

from __future__ import annotations

import asyncio
import threading

from modelport.state.runner import StoreRunner


class Conn:
    """A connection that remembers the threads it was opened and closed on."""

    def __init__(self) -> None:
        self.opened_on = threading.current_thread().name
        self.closed_on: str | None = None

    def close(self) -> None:
        self.closed_on = threading.current_thread().name


def test_calls_run_in_order_on_one_thread_that_opens_the_connection_on_first_use() -> None:
    made: list[Conn] = []

    def connect() -> Conn:
        made.append(Conn())
        return made[-1]

    runner = StoreRunner("test", connect)

    async def main() -> list[tuple[int, str]]:
        assert runner.opened is None  # nothing is opened until a call needs it

        def step(n: int) -> tuple[int, str]:
            runner.conn  # noqa: B018 - opens it, once
            return n, threading.current_thread().name

        done = await asyncio.gather(*(runner.run(step, n) for n in range(20)))
        await runner.aclose()
        return done

    done = asyncio.run(main())
    assert [n for n, _ in done] == list(range(20))
    assert len({thread for _, thread in done}) == 1 and done[0][1].startswith("modelport-test")
    assert len(made) == 1 and made[0].opened_on == done[0][1] == made[0].closed_on
    assert runner.opened is None
    # Used again after closing: a new thread, a new connection.
    assert runner.call(lambda: runner.conn) is made[1]
    runner.close()
    assert made[1].closed_on is not None


def test_callers_on_many_threads_share_one_worker() -> None:
    runner = StoreRunner("test", Conn)
    start = threading.Barrier(8)

    def caller() -> str:
        start.wait()
        return runner.call(lambda: threading.current_thread().name)

    threads: list[str] = []
    workers = [threading.Thread(target=lambda: threads.append(caller())) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    runner.close()
    assert len(threads) == 8 and len(set(threads)) == 1


def test_submit_and_call_serve_threads_off_the_loop_and_reset_reopens() -> None:
    made: list[Conn] = []
    runner = StoreRunner("test", lambda: made.append(Conn()) or made[-1])
    first = runner.call(lambda: runner.conn)
    assert runner.submit(lambda: runner.conn).result() is first
    runner.call(runner.reset)
    assert first.closed_on is not None and runner.call(lambda: runner.conn) is not first
    runner.close()
    assert made[-1].closed_on is not None


def test_a_store_may_keep_a_shared_connection_open() -> None:
    conn = Conn()
    runner = StoreRunner("test", lambda: conn, close=lambda c: None)
    runner.call(lambda: runner.conn)
    runner.close()
    assert conn.closed_on is None and runner.opened is None


def test_keyword_arguments_reach_the_call() -> None:
    runner = StoreRunner("test", Conn)

    async def main() -> str:
        try:
            return await runner.run(lambda a, *, b: a + b, "x", b="y")
        finally:
            await runner.aclose()

    assert asyncio.run(main()) == "xy"
