"""The sliding window behind the KeyInit fetch limits (keyserver.http.ratelimit)."""

from keyserver.http.ratelimit import SlidingWindow


def test_limit_per_key_within_any_window():
    window = SlidingWindow(2, window_ms=1000)
    assert window.acquire("a", 0) and window.acquire("a", 500)
    assert not window.acquire("a", 999)
    assert window.acquire("b", 999)                  # keys are counted apart
    assert window.acquire("a", 1000)                 # the event at 0 has left the window
    assert not window.acquire("a", 1499)
    assert window.acquire("a", 1500)


def test_refused_events_do_not_count():
    window = SlidingWindow(1, window_ms=1000)
    assert window.acquire("a", 0)
    assert not any(window.acquire("a", t) for t in range(1, 1000, 100))
    assert window.acquire("a", 1000)


def test_zero_is_unlimited():
    window = SlidingWindow(0)
    assert all(window.acquire("a", 0) for _ in range(10_000))


def test_idle_keys_are_forgotten():
    window = SlidingWindow(5, window_ms=1000)
    for key in range(100):
        window.acquire(key, 0)
    window.acquire("late", 999)
    window.acquire("now", 2000)                      # sweeps everything older than 1000
    assert set(window._events) == {"now"}
