"""The control client's HTTP side in threads: no file descriptors left behind by a thread that ends."""

from __future__ import annotations

import threading

import psutil

from generator.serve.control import ServerControl, Target, release_thread_hub
from generator.serve.launch import find_free_port


def test_threads_that_used_the_http_client_leave_no_descriptor_behind() -> None:
    """Each OS thread that waits on gevent's sockets gets an event loop with descriptors of its own; the
    server's watcher is one thread per start, so a long-lived process must not keep one per thread."""
    target = Target("http", "127.0.0.1", find_free_port())  # nothing listens: the call is refused

    def ask() -> None:
        try:
            with ServerControl(target, timeout=1.0) as control:
                assert not control.is_ready()
        finally:
            release_thread_hub()

    def ask_in_thread() -> None:
        thread = threading.Thread(target=ask)
        thread.start()
        thread.join()

    ask_in_thread()  # the first use imports gevent and tritonclient, which may open descriptors once
    before = psutil.Process().num_fds()
    for _ in range(10):
        ask_in_thread()
    assert psutil.Process().num_fds() <= before
