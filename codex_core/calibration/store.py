"""Where the published calibrator of a repository lives: ``CODEX_HOME/repos/<repo>/calibration/``.

``calibrator-<N>.json`` (N counts up per home, never reused), its diagrams ``reliability-<N>.png``
and ``precision_coverage-<N>.png``, and ``current.json`` = ``{"version": N, "path":
"calibrator-N.json", "tau": t}``, replaced last so a reader sees the old calibrator or the new
one. The ``calibration`` asset and a snapshot restore write through :meth:`CalibratorStore.publish`
/ :meth:`CalibratorStore.install`; serving, ``feriactl eval report`` and snapshot creation read
through :meth:`CalibratorStore.current`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from codex_core.calibration.fit import Calibrator
from codex_core.catalog import write_json

POINTER = "current.json"
FILE_PATTERN = re.compile(r"calibrator-([0-9]{1,9})\.json")


@dataclass(frozen=True)
class Published:
    version: int
    path: Path  # the calibrator file
    tau: float | None
    pointer: Path

    def load(self) -> Calibrator:
        return Calibrator.load(self.path)


class CalibratorStore:
    def __init__(self, directory: Path):
        self.directory = Path(directory)

    @property
    def pointer(self) -> Path:
        return self.directory / POINTER

    def next_version(self) -> int:
        numbers = [int(m.group(1)) for p in self.directory.glob("calibrator-*.json")
                   if (m := FILE_PATTERN.fullmatch(p.name))]
        return 1 + max(numbers, default=0)

    def diagram_paths(self, version: int) -> tuple[Path, Path]:
        """(reliability diagram, precision/coverage curve) of calibrator ``version``."""
        return (self.directory / f"reliability-{version}.png",
                self.directory / f"precision_coverage-{version}.png")

    def publish(self, calibrator: Calibrator, tau: float) -> Published:
        """Number ``calibrator``, write it, then point ``current.json`` at it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        calibrator.version = self.next_version()
        path = calibrator.save(self.directory / f"calibrator-{calibrator.version}.json")
        write_json(self.pointer, {"version": calibrator.version, "path": path.name, "tau": tau})
        return Published(calibrator.version, path, tau, self.pointer)

    def install(self, pointer: dict, calibrator_file: Path, move) -> None:
        """A calibrator from elsewhere (a snapshot): kept under its number unless that number holds
        a different calibrator here, then renumbered; the pointer last. ``move(src, dst)`` puts
        the file in place (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = pointer["path"]
        existing = self.directory / name
        if existing.exists() and existing.read_bytes() != Path(calibrator_file).read_bytes():
            number = self.next_version()
            name = f"calibrator-{number}.json"
            pointer = {**pointer, "path": name, "version": number}
        move(calibrator_file, self.directory / name)
        write_json(self.pointer, pointer)

    def current(self) -> Published | None:
        """The published calibrator (None when none is); raises ``ValueError`` for a pointer that
        does not name a calibrator file next to it."""
        try:
            data = json.loads(self.pointer.read_text())
        except FileNotFoundError:
            return None
        name = str(data.get("path", ""))
        if not FILE_PATTERN.fullmatch(name) or not (self.directory / name).is_file():
            raise ValueError(f"{self.pointer} names {name!r}, which is not a calibrator file next to it")
        return Published(int(data.get("version", 0)), self.directory / name, data.get("tau"), self.pointer)
