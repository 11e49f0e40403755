"""The batch packer writes the same bytes as redis-py's own packer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis.exceptions import DataError

from service.resp import pack_command

ENCODER = Encoder("utf-8", "strict", decode_responses=False)
REFERENCE = PythonRespSerializer(6000, ENCODER.encode)

arguments = st.one_of(
    st.binary(max_size=70),
    st.binary(min_size=4090, max_size=4100),  # either side of the header table's end
    st.binary(min_size=6001, max_size=6100),
    st.text(max_size=30),
    st.integers(),
    st.floats(allow_nan=False),
    st.binary(max_size=20).map(memoryview),
)


@given(st.lists(arguments, max_size=20), st.booleans())
def test_pack_command_any_arguments_same_bytes_as_redis_py(args: list[object], utf8: bool) -> None:
    command = ("EVALSHA", *args)

    packed = pack_command(command, ENCODER.encode, utf8=utf8)

    assert packed == b"".join(REFERENCE.pack(*command))


@pytest.mark.parametrize("name", ["CONFIG GET", b"CONFIG GET"])
def test_pack_command_name_with_spaces_split_into_words(name: str | bytes) -> None:
    packed = pack_command((name, "maxmemory"), ENCODER.encode)

    assert packed == b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$9\r\nmaxmemory\r\n"


def test_pack_command_bool_rejected_like_redis_py() -> None:
    with pytest.raises(DataError):
        pack_command(("SET", "k", True), ENCODER.encode)
