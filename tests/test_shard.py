"""Sharding: every endpoint in exactly one replica, balanced, stable, and cheap to grow."""
from __future__ import annotations

import socket
from collections import Counter

import pytest

from prober.shard import in_shard, jump_hash, parse_shard, shard_of

HOSTS = [f"svc{i}.team{i % 37}.example.com" for i in range(10_000)]


def test_jump_hash_matches_the_published_reference_vectors() -> None:
    # Vectors shared by the Go and Rust ports of Lamping & Veach's C++ code.
    assert jump_hash(1, 1) == 0
    assert jump_hash(42, 57) == 43
    assert jump_hash(0xDEAD10CC, 666) == 361
    assert jump_hash(256, 1024) == 520
    assert jump_hash(2016238256797177309, 11) == 3


def test_pinned_assignments_stay_stable_across_runs() -> None:
    # A change here reshuffles every deployed fleet: treat it as a breaking change.
    assert [shard_of("api.example.com", n) for n in (1, 2, 4, 5, 16)] == [0, 1, 3, 3, 10]
    assert [shard_of("www.example.org", n) for n in (1, 2, 4, 5, 16)] == [0, 0, 0, 4, 12]
    assert [shard_of("shop.example.net", n) for n in (1, 2, 4, 5, 16)] == [0, 0, 0, 0, 15]


def test_hostname_is_normalised_before_hashing() -> None:
    assert shard_of("API.Example.COM.", 16) == shard_of("api.example.com", 16) == 10


def test_every_endpoint_lands_in_exactly_one_shard() -> None:
    shards = [(i, 4) for i in range(4)]
    for host in HOSTS:
        assert sum(in_shard(host, s) for s in shards) == 1, host
    assert all(in_shard(host, None) for host in HOSTS[:100])


def test_shards_are_roughly_balanced() -> None:
    counts = Counter(shard_of(host, 4) for host in HOSTS)
    assert sorted(counts) == [0, 1, 2, 3]
    # 2,500 expected each; binomial sd ~43, so +-10% is > 5 sd.
    assert all(2250 <= c <= 2750 for c in counts.values()), counts


def test_growing_from_4_to_5_shards_moves_about_a_fifth(capsys: pytest.CaptureFixture[str]) -> None:
    moved = [h for h in HOSTS if shard_of(h, 4) != shard_of(h, 5)]
    with capsys.disabled():
        print(f"\n4->5 shards moved {len(moved)} of {len(HOSTS)} endpoints ({len(moved) / len(HOSTS):.1%})")
    # Ideal is 1/5 = 20%; plain modulo would move 80%.
    assert len(moved) / len(HOSTS) <= 0.25 + 0.01
    # Jump hash only ever moves endpoints onto the new shard, never between old ones.
    assert all(shard_of(h, 5) == 4 for h in moved)


@pytest.mark.parametrize(("text", "hostname", "expected"), [
    ("0/1", None, (0, 1)),
    ("3/4", None, (3, 4)),
    (" 2/8 ", None, (2, 8)),
    ("ordinal/3", "prober-2", (2, 3)),
    ("ordinal/4", "prober-eu-west-0", (0, 4)),
])
def test_parse_shard_accepts(text: str, hostname: str | None, expected: tuple[int, int]) -> None:
    assert parse_shard(text, hostname) == expected


@pytest.mark.parametrize(("text", "hostname", "message"), [
    ("4/4", None, "shard index 4 is not below the shard count 4"),
    ("0/0", None, "must be at least 1"),
    ("-1/4", None, "expected I/N"),
    ("1", None, "expected I/N"),
    ("a/b", None, "expected I/N"),
    ("1/2/3", None, "expected I/N"),
    ("", None, "expected I/N"),
    ("ordinal/3", "prober", "does not end in -<digits>"),
    ("ordinal/3", "prober-3", "shard index 3 is not below the shard count 3"),
])
def test_parse_shard_rejects_with_one_line(text: str, hostname: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as excinfo:
        parse_shard(text, hostname)
    assert "\n" not in str(excinfo.value)


def test_ordinal_defaults_to_this_machines_hostname() -> None:
    name = socket.gethostname()
    if name.rsplit("-", 1)[-1].isdigit():
        assert parse_shard(f"ordinal/{10**9}") == (int(name.rsplit("-", 1)[-1]), 10**9)
    else:
        with pytest.raises(ValueError, match=repr(name)):
            parse_shard("ordinal/4")
