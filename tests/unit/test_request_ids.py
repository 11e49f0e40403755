"""Fresh request ids: 16 hex characters, never repeated in a process, nor by a forked worker."""

from __future__ import annotations

import os
import re

from service.api.middleware import _request_id

NO_HEADER = {"headers": [(b"accept", b"*/*")]}


def test_fresh_ids_are_sixteen_hex_characters_and_never_repeat() -> None:
    ids = [_request_id(NO_HEADER) for _ in range(20_000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_process_draws_a_new_prefix_so_workers_never_share_ids() -> None:
    before = _request_id(NO_HEADER)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its next id and leave at once
        os.write(write, _request_id(NO_HEADER).encode())
        os._exit(0)
    os.close(write)
    try:
        forked = os.read(read, 64).decode()
    finally:
        os.close(read)
        os.waitpid(child, 0)
    after = _request_id(NO_HEADER)
    assert re.fullmatch(r"[0-9a-f]{16}", forked)
    assert forked[:8] != before[:8]  # 1 in 2**32 to fail by chance
    assert after[:8] == before[:8]
    assert after != before


def test_a_sane_caller_id_is_kept_and_an_unsafe_one_replaced() -> None:
    assert _request_id({"headers": [(b"x-request-id", b"shop-7.a_b")]}) == "shop-7.a_b"
    replaced = _request_id({"headers": [(b"x-request-id", b"bad id\twith tab")]})
    assert re.fullmatch(r"[0-9a-f]{16}", replaced)
