"""The in-flight limit (`proxy.gateway.lanes`) and the answer book (`proxy.gateway.book`),
without a network: who goes first, who waits, what is kept and what is handed on."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from proxy.gateway.book import Answer, AnswerBook, Flight, request_key
from proxy.gateway.lanes import Lanes, concurrency

WAIT = 10.0  # liveness only: every wait below ends long before this unless the code is wrong


class Taker:
    """A thread that takes a lane, notes the order it got it in, and holds it until released."""

    def __init__(self, lanes: Lanes, order: list[str], name: str, *, write: bool = False,
                 needed: bool = True) -> None:
        self.got: bool | None = None
        self.release = threading.Event()
        self._lanes, self._order, self._name, self._write, self._needed = lanes, order, name, write, needed
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.got = self._lanes.acquire(write=self._write, timeout=WAIT, needed=lambda: self._needed)
        if self.got:
            self._order.append(self._name)
            self.release.wait(WAIT)
            self._lanes.release(write=self._write)

    def start(self, lanes: Lanes, waiting: int) -> Taker:
        self.thread.start()
        wait_until(lambda: lanes.view()["waiting"] >= waiting or self.got is not None)
        return self

    def finish(self) -> None:
        self.release.set()
        self.thread.join(WAIT)


def wait_until(check: Any) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if check():
            return
        done.wait(0.01)
    raise AssertionError("never happened")


def test_concurrency_is_the_setting_lowered_by_a_smaller_pool() -> None:
    assert concurrency(2, 15) == 2
    assert concurrency(4, 3) == 3
    assert concurrency(2, 0) == 1  # no keep-alive is not no requests
    assert concurrency(40, 100) == 16


def test_reads_beyond_the_limit_wait_oldest_first() -> None:
    lanes, order = Lanes(2), []
    a = Taker(lanes, order, "a").start(lanes, 0)
    b = Taker(lanes, order, "b").start(lanes, 0)
    wait_until(lambda: order == ["a", "b"])
    c = Taker(lanes, order, "c").start(lanes, 1)
    d = Taker(lanes, order, "d").start(lanes, 2)
    assert lanes.view()["in_flight"] == 2 and lanes.view()["waiting"] == 2
    a.finish()
    wait_until(lambda: order == ["a", "b", "c"])
    b.finish()
    wait_until(lambda: order == ["a", "b", "c", "d"])
    for t in (c, d):
        t.finish()
    assert lanes.view() == {"limit": 2, "in_flight": 0, "waiting": 0, "most_in_flight": 2, "dropped": 0}


def test_a_write_goes_ahead_of_waiting_reads_and_runs_alone() -> None:
    lanes, order = Lanes(2), []
    a = Taker(lanes, order, "a").start(lanes, 0)
    wait_until(lambda: order == ["a"])
    c = Taker(lanes, order, "read").start(lanes, 0)  # a free lane: goes at once
    wait_until(lambda: order == ["a", "read"])
    late = Taker(lanes, order, "late read")
    w = Taker(lanes, order, "write", write=True).start(lanes, 1)
    late.start(lanes, 2)
    a.finish()
    assert order == ["a", "read"]  # the write waits for the read still in flight ...
    c.finish()
    wait_until(lambda: order == ["a", "read", "write"])
    assert lanes.view()["in_flight"] == 1  # ... and the late read waits for the write
    w.finish()
    wait_until(lambda: order[-1] == "late read")
    late.finish()


def test_writes_go_one_at_a_time_in_the_order_they_came() -> None:
    lanes, order = Lanes(4), []
    first = Taker(lanes, order, "w1", write=True).start(lanes, 0)
    wait_until(lambda: order == ["w1"])
    second = Taker(lanes, order, "w2", write=True).start(lanes, 1)
    third = Taker(lanes, order, "w3", write=True).start(lanes, 2)
    first.finish()
    wait_until(lambda: order == ["w1", "w2"])
    second.finish()
    wait_until(lambda: order == ["w1", "w2", "w3"])
    third.finish()


def test_a_waiting_read_no_longer_needed_is_dropped_at_its_turn() -> None:
    lanes, order = Lanes(1), []
    a = Taker(lanes, order, "a").start(lanes, 0)
    wait_until(lambda: order == ["a"])
    unneeded = Taker(lanes, order, "unneeded", needed=False).start(lanes, 1)
    b = Taker(lanes, order, "b").start(lanes, 2)
    a.finish()
    # The dropped taker's thread may note its answer after b has noted its turn.
    wait_until(lambda: order == ["a", "b"] and unneeded.got is not None)
    assert unneeded.got is False and lanes.view()["dropped"] == 1
    b.finish()
    unneeded.finish()


def test_a_read_that_waits_too_long_gives_up_without_a_lane() -> None:
    lanes = Lanes(1)
    assert lanes.acquire(write=False, timeout=WAIT)
    assert not lanes.acquire(write=False, timeout=0.05)
    assert lanes.view()["waiting"] == 0 and lanes.view()["in_flight"] == 1


def test_submitted_reads_run_oldest_first_in_few_threads() -> None:
    lanes, order = Lanes(1), []
    gate = threading.Event()

    def read(name: str) -> None:
        with lanes.turn(timeout=WAIT) as got:
            assert got
            order.append(name)
            if name == "0":
                gate.wait(WAIT)

    for i in range(8):
        lanes.submit(lambda i=i: read(str(i)))
    wait_until(lambda: order == ["0"])
    assert lanes.view()["waiting"] == 7 and lanes.view()["in_flight"] == 1
    before = threading.active_count()
    gate.set()
    wait_until(lambda: len(order) == 8)
    assert order == [str(i) for i in range(8)]
    assert threading.active_count() <= before  # the line costs no thread per waiting read
    lanes.close()


def test_closing_sends_every_waiting_call_away() -> None:
    lanes, order = Lanes(1), []
    a = Taker(lanes, order, "a").start(lanes, 0)
    wait_until(lambda: order == ["a"])
    b = Taker(lanes, order, "b").start(lanes, 1)
    lanes.close()
    b.thread.join(WAIT)
    assert b.got is False and not lanes.acquire(write=True, timeout=WAIT)
    a.finish()


# ---- the answer book -----------------------------------------------------------------------

def request(url: str = "https://gw/api/status", method: str = "GET", body: Any = None,
            cookie: str = "AuthCookie=a") -> Any:
    return SimpleNamespace(url=url, method=method, body=body, headers={"Cookie": cookie})


def ok(status: int = 200, body: bytes = b"{}") -> Answer:
    return Answer(status, "OK", (("Content-Type", "application/json"),), body)


def test_what_a_request_asks_names_credentials_method_url_and_body() -> None:
    assert request_key(request()) == request_key(request())
    assert request_key(request()) != request_key(request(cookie="AuthCookie=b"))
    query = request("https://gw/tedapi/v1", "POST", b"query A")
    assert request_key(query) != request_key(request("https://gw/tedapi/v1", "POST", b"query B"))
    assert request_key(request("https://gw/api/login/Basic", "POST", b"password=x")) is None


class Clock:
    def __init__(self) -> None:
        self.window = 7

    def __call__(self) -> int:
        return self.window


def test_an_answer_is_kept_for_its_window_and_waiters_get_it() -> None:
    clock = Clock()
    book = AnswerBook(clock)
    flight, lead = book.claim("k")
    assert lead and isinstance(flight, Flight)
    follower, follows = book.claim("k")
    assert follower is flight and not follows  # the same request in flight: wait for it
    assert isinstance(flight, Flight)
    book.settle("k", flight, ok())
    assert flight.done.is_set() and flight.answer == ok()
    assert book.claim("k") == (ok(), False)  # later in the window: the kept answer
    clock.window = 8
    again, lead = book.claim("k")
    assert lead and isinstance(again, Flight)  # a new window asks again


def test_a_401_or_403_is_never_handed_on_and_failures_are_not_kept() -> None:
    book = AnswerBook(Clock())
    for status, replayable, kept in ((401, False, False), (403, False, False), (404, True, True),
                                     (429, True, False), (503, True, False), (500, True, False)):
        key = f"k{status}"
        flight, _ = book.claim(key)
        assert isinstance(flight, Flight)
        book.settle(key, flight, ok(status))
        assert (flight.answer is not None and flight.answer.replayable) is replayable, status
        assert isinstance(book.claim(key)[0], Answer) is kept, status
    flight, _ = book.claim("gone")
    assert isinstance(flight, Flight)
    book.settle("gone", flight, Answer(None, error="ConnectionError"))
    assert flight.answer is not None and flight.answer.replayable  # the waiters hear it failed
    assert book.claim("gone")[1]  # the next caller asks again


def test_an_answer_that_arrives_in_the_next_window_is_not_kept() -> None:
    clock = Clock()
    book = AnswerBook(clock)
    flight, _ = book.claim("k")
    assert isinstance(flight, Flight)
    clock.window = 8
    book.settle("k", flight, ok())
    assert book.claim("k")[1]


# ---- the window cache: what a waiting fetch is still needed for ---------------------------------

def test_a_fetch_is_needed_in_its_window_or_while_someone_waits_and_files_where_it_was_sent() -> None:
    from proxy.gateway.cache import Claim, WindowCache
    from proxy.gateway.outcome import Kind, Verdict

    now = [10.0]
    cache = WindowCache(5.0, periods={"slow": 30.0}, clock=lambda: now[0])
    held: list[Claim] = []
    claim = cache.claim("k", lambda c: Verdict(Kind.DATA, 1), lambda work: held.append(work) or None)
    assert isinstance(claim, Claim) and len(held) == 1  # its fetch is queued, not run
    assert cache.needed(claim)
    now[0] = 16.0  # the next window: nobody waits, so it is not needed any more ...
    assert not cache.needed(claim)
    waiter = threading.Thread(target=cache.wait, args=(claim, WAIT))
    waiter.start()
    wait_until(lambda: claim.waiters == 1)
    assert cache.needed(claim)  # ... unless a reader still waits for it
    cache.sent(claim)
    held[0]()
    waiter.join(WAIT)
    entry = cache.fresh("k")
    assert entry is not None and entry.window == cache.window("k")  # filed under the window it was sent in
    assert cache.period_of("slow") == 30.0 and cache.period_of("k") == 5.0
    dropped = cache.claim("gone", lambda c: None, lambda work: work())
    assert isinstance(dropped, Claim) and dropped.done.is_set() and dropped.entry is None
    assert cache.last("gone") is None  # a dropped fetch leaves no entry
