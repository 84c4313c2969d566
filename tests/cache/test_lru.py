"""dcmstream.cache.lru: the count-bounded LRU and the closing-on-evict LRU of open objects."""

from __future__ import annotations

import threading

import pytest

from dcmstream.cache.lru import LRU, OpenLRU


class Handle:
    """Something that holds a resource until closed."""

    opened = 0

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        Handle.opened += 1

    def close(self) -> None:
        assert not self.closed, f"{self.name} closed twice"
        self.closed = True


def test_lru_evicts_least_recently_used() -> None:
    evicted = []
    lru: LRU[str, int] = LRU(2, on_evict=lambda k, v: evicted.append((k, v)))
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now the most recent
    lru.put("c", 3)
    assert evicted == [("b", 2)] and "b" not in lru and len(lru) == 2
    assert lru.peek("a") == 1 and lru.get("zzz", 7) == 7
    lru.put("c", 30)  # replacing is not an eviction
    assert evicted == [("b", 2)] and lru.get("c") == 30
    assert lru.pop("a") == 1 and lru.pop("a") is None
    assert lru.clear() == [30] and len(lru) == 0
    with pytest.raises(ValueError):
        LRU(0)


def test_open_lru_closes_what_it_evicts_and_nothing_else() -> None:
    lru: OpenLRU[str, Handle] = OpenLRU(2)
    a = lru.open("a", lambda: Handle("a"))
    b = lru.open("b", lambda: Handle("b"))
    assert lru.open("a", lambda: Handle("again")) is a  # a hit: not reopened, now most recent
    c = lru.open("c", lambda: Handle("c"))
    assert b.closed and not a.closed and not c.closed and len(lru) == 2
    lru.close_all()
    assert a.closed and c.closed and len(lru) == 0


def test_in_use_objects_are_never_closed_under_their_user() -> None:
    lru: OpenLRU[int, Handle] = OpenLRU(1)
    with lru.use(1, lambda: Handle("1")) as one:
        with lru.use(2, lambda: Handle("2")) as two:
            lru.open(3, lambda: Handle("3"))
            assert not one.closed and not two.closed  # pinned: the bound waits
        assert two.closed or one.closed  # leaving the blocks brings it back to the bound
    assert len(lru) == 1
    survivor = next(iter(lru._open.values()))
    assert not survivor.closed


def test_pin_put_keep_and_alive() -> None:
    first = Handle("first")
    lru: OpenLRU[str, Handle] = OpenLRU(1, keep=lambda h: h is first, alive=lambda h: not h.closed)
    lru.put("first", first)
    other = lru.open("x", lambda: Handle("x"))
    assert not other.closed  # never handed out closed: over the bound until the next eviction
    lru.open("w", lambda: Handle("w"))
    assert not first.closed and other.closed  # ``keep`` survives; x was the least recent
    lru.pin("y")
    y = lru.open("y", lambda: Handle("y"))
    replacement = Handle("y2")
    lru.put("y", replacement)  # the pinned old one is its user's to close
    assert not y.closed
    lru.unpin("y")
    assert replacement.closed  # unpinned, over the bound
    # alive: an object closed by someone else is reopened, not handed out
    z = lru.open("z", lambda: Handle("z"))
    assert not z.closed
    z.close()
    z2 = lru.open("z", lambda: Handle("z2"))
    assert z2 is not z and not z2.closed


def test_threads_opening_the_same_key_share_one_object() -> None:
    lru: OpenLRU[str, Handle] = OpenLRU(4)
    start = threading.Barrier(8)
    got: list[Handle] = []
    made: list[Handle] = []
    lock = threading.Lock()

    def opener() -> Handle:
        h = Handle("k")
        with lock:
            made.append(h)
        return h

    def worker() -> None:
        start.wait()
        with lru.use("k", opener) as h:
            got.append(h)
            assert not h.closed

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(map(id, got))) == 1 and not got[0].closed
    assert all(h.closed for h in made if h is not got[0])  # the extra opens were closed
