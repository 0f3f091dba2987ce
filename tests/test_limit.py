"""The adaptive concurrency limit, driven by real event-loop lateness: probes that hog the CPU
without yielding make the loop late, as a CPU-starved process does; the limit must shrink, let
no more than the limit start while it is small, and grow back once the loop is on time."""
from __future__ import annotations

import asyncio
import time

from prober.service import limit as limit_module
from prober.service.limit import FLOOR, AdaptiveLimit


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_the_limit_shrinks_while_the_loop_is_starved_and_grows_back() -> None:
    async def main() -> tuple[list[int], list[tuple[int, int]], int]:
        gate = AdaptiveLimit(16)
        seen: list[int] = []
        looks: list[tuple[int, int]] = []  # (limit, in flight) at each look

        def looked(limit: int, late: float) -> None:
            seen.append(limit)
            looks.append((limit, gate.in_flight))

        watcher = asyncio.ensure_future(gate.watch(looked))

        async def hog() -> None:
            async with gate:
                for _ in range(3):
                    _burn(0.03)  # 16 of these in one loop pass: the loop is ~0.5 s late
                    await asyncio.sleep(0)

        await asyncio.gather(*(hog() for _ in range(64)))
        shrunk = min(seen)
        deadline = time.monotonic() + 8
        while gate.limit < 16 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        watcher.cancel()
        return seen, looks, shrunk if gate.limit == 16 else -gate.limit

    seen, looks, shrunk = asyncio.run(main())
    assert 0 < shrunk < 16, f"the limit never shrank, or never grew back: {seen}"
    assert min(seen) >= FLOOR
    # once shrunk, fewer ran at once than the fixed limit allowed, while probes were still waiting
    assert any(0 < in_flight <= limit < 16 for limit, in_flight in looks), looks


def test_a_cancelled_waiter_gives_back_nothing_it_did_not_take() -> None:
    async def main() -> tuple[int, int]:
        gate = AdaptiveLimit(2)
        release = asyncio.Event()

        async def hold() -> None:
            async with gate:
                await release.wait()

        holders = [asyncio.ensure_future(hold()) for _ in range(2)]
        waiters = [asyncio.ensure_future(hold()) for _ in range(5)]
        await asyncio.sleep(0.01)
        for w in waiters[:3]:
            w.cancel()
        release.set()
        await asyncio.gather(*holders, *waiters, return_exceptions=True)
        return gate.in_flight, gate.waiting

    assert asyncio.run(main()) == (0, 0)


def test_a_late_look_shrinks_by_a_third_and_an_on_time_one_grows_by_an_eighth() -> None:
    gate = AdaptiveLimit(256)
    assert gate.observe(limit_module.STARVED_SECONDS + 0.01) == 170
    assert gate.observe(0.1) == 170  # neither starved nor relaxed: kept
    assert gate.observe(0.0) == 191
    for _ in range(20):
        gate.observe(1.0)
    assert gate.limit == FLOOR
    assert AdaptiveLimit(4).observe(1.0) == 4  # a limit below the floor is never shrunk


def test_skipped_runs_are_counted_and_summed_up_in_the_log_not_one_line_each(tmp_path, caplog) -> None:
    """A probe that outlives its interval makes the next runs come due while it still goes: each
    is counted, APScheduler's own warning per skipped run stays out of the log, and the scheduler
    says it once, with the count."""
    import logging

    from prometheus_client import CollectorRegistry

    from prober.config import parse_config
    from prober.engine import unknown_report
    from prober.service.app import _setup_logging
    from prober.service.metrics import SelfMetrics, SnapshotStore
    from prober.service.scheduler import ProbeScheduler

    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    config = parse_config("endpoints:\n  - hostname: slow.lab.test\n    interval: 1s\n    timeout: 1s\n",
                          "probes.yaml", resolv_conf=str(resolv))

    async def slow(endpoint):  # stands for a probe held up by a starved loop or a full limit
        started_wall, started = time.time(), time.monotonic()
        await asyncio.sleep(3.6)
        return unknown_report(endpoint, started_wall, started, "held up")

    async def main() -> float:
        registry = CollectorRegistry(auto_describe=False)
        scheduler = ProbeScheduler(slow, SnapshotStore(), SelfMetrics(registry, None), concurrency=4)
        scheduler.apply({e.hostname: e for e in config.endpoints})
        scheduler.start()
        await asyncio.sleep(4.5)
        await scheduler.stop(0.1)
        return registry.get_sample_value("prober_probe_runs_skipped_total")

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        _setup_logging("info")
        root.addHandler(caplog.handler)
        caplog.set_level(logging.WARNING)
        skipped = asyncio.run(main())
    finally:
        root.handlers[:], _ = handlers, root.setLevel(level)
        logging.getLogger("apscheduler").setLevel(logging.NOTSET)
    assert skipped >= 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warnings if r.name.startswith("apscheduler")], [r.getMessage() for r in warnings]
    summaries = [r.getMessage() for r in warnings if r.getMessage().startswith("skipped ")]
    assert len(summaries) == 1 and summaries[0].startswith("skipped a run of slow.lab.test because"), summaries
    assert summaries[0].endswith("further skips are summed up once a minute")
