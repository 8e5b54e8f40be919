"""Write SVG screenshots of every screen: ``python scripts/tui_screenshots.py [DIR]``
(default ``docs/screenshots``). Uses the TUI tests' demo store (tests/tui/demo_store.py), a
frozen clock and frozen machine figures, so the pictures are the same on every machine."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from prunestudio.tui.app import PruneStudioApp
from prunestudio.tui.feed import StoreReader
from prunestudio.tui.machine import FrozenSampler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "tui"))
from demo_store import DEMO_MACHINE, DEMO_NOW, build_demo_store  # noqa: E402

__all__ = ["SHOTS", "main"]

GP = ("down", "down", "enter")
# file name -> (terminal size, keys pressed from the start)
SHOTS: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    "studies.svg": ((100, 24), ()),
    "study-80x24.svg": ((80, 24), (*GP, "down")),
    "study-wide.svg": ((140, 42), (*GP, "down")),
    "study-sorted-filtered.svg": ((120, 36), ("end", "enter", *["s"] * 5, "f", "f", "f")),
    "candidate-expression.svg": ((100, 36), (*GP, "down", "enter")),
    "candidate-layer-ratios.svg": ((100, 40), ("down", "enter", "enter")),
    "candidate-failed.svg": ((100, 30), ("end", "enter", *["down"] * 6, "enter")),
    "export.svg": ((80, 24), (*GP, "down", "x")),
    "cancel.svg": ((80, 24), (*GP, "c")),
    "palette.svg": ((100, 30), (*GP, "ctrl+p", *"sort", "_")),
    "study-workers.svg": ((160, 40), (*GP, "t")),
}


async def _shoot(store: Path, out: Path, size: tuple[int, int], keys: tuple[str, ...]) -> None:
    reader = StoreReader(store)
    app = PruneStudioApp(reader, interval=3600, machine_interval=0, clock=lambda: DEMO_NOW,
                         sampler=FrozenSampler(DEMO_MACHINE), store_label="demo.db")
    try:
        async with app.run_test(size=size) as pilot:
            for key in ("_", *keys, "_"):
                if key != "_":
                    await pilot.press(key)
                await pilot.pause()
                await app.workers.wait_for_complete()
                await pilot.pause(0.1)
            app.save_screenshot(out.name, str(out.parent))
    finally:
        reader.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0] if args else "docs/screenshots")
    target.mkdir(parents=True, exist_ok=True)
    os.environ["TZ"] = "UTC"  # event times, as in the snapshot tests
    time.tzset()
    with tempfile.TemporaryDirectory() as tmp:
        store = build_demo_store(Path(tmp) / "demo.db")
        for name, (size, keys) in SHOTS.items():
            asyncio.run(_shoot(store, target / name, size, keys))
            print(target / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
