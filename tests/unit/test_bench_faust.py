"""Pure parts of ``vudsync bench faust``: reading CPU time from /proc/<pid>/stat, the input."""

from __future__ import annotations

import json

import pytest

from devtools.bench import cpu_seconds_from_stat
from devtools.bench.faust import Variant, _variants, input_records

# proc(5): pid (comm) state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
#          utime stime ...
STAT = "4242 (python3) S 1 4242 4242 0 -1 4194560 9000 0 0 0 250 50 0 0 20 0 3 0 100 0 0"


def test_user_plus_system_ticks_over_clock_rate() -> None:
    assert cpu_seconds_from_stat(STAT, 100) == pytest.approx(3.0)


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    tricky = STAT.replace("(python3)", "(faust: (worker) 1)")
    assert cpu_seconds_from_stat(tricky, 100) == pytest.approx(3.0)


@pytest.mark.parametrize("line", ["", "4242 python3 S 1", "4242 (python3) S 1 2 3"])
def test_a_malformed_line_is_an_error_not_zero(line: str) -> None:
    with pytest.raises(ValueError):
        cpu_seconds_from_stat(line, 100)


def test_input_records_are_json_of_about_500_bytes_with_repeating_keys() -> None:
    records = input_records(1000, keys=700)
    sizes = [len(v) for _, v in records]
    assert 400 <= sum(sizes) / len(sizes) <= 650
    assert all(json.loads(v)["entity_id"].encode() == k for k, v in records)
    assert len({k for k, _ in records}) < 1000
    assert input_records(10, keys=7) == input_records(10, keys=7)  # the same input every run


def test_variants_are_the_cross_product_of_the_options() -> None:
    variants = _variants((0, 3), ("off", "on"), (1, 100))
    assert len(variants) == 8
    assert Variant(3, True, 100) in variants
    assert Variant(0, False, 1) in variants
