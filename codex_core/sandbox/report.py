"""What a sandboxed run hands back: per-step results, artifacts, a verdict — as data and Markdown."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# Step statuses. A run's status is the first non-ok step's ("blocked: ..." and "unavailable: ..."
# carry their reason), or "ok".
OK, FAILED, TIMEOUT, BLOCKED, UNAVAILABLE, SKIPPED = "ok", "failed", "timeout", "blocked", "unavailable", "skipped"


@dataclass(frozen=True)
class StepResult:
    command: str
    status: str  # ok | failed | timeout | blocked | unavailable | skipped
    exit_code: int | None = None  # None when the step did not run to an exit (blocked, skipped, ...)
    duration_sec: float = 0.0
    executable: str | None = None  # the resolved path the policy judged
    reason: str = ""  # why blocked / unavailable / skipped / timed out
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def verdict(self) -> str:
        return f"{self.status}: {self.reason}" if self.reason and self.status in (BLOCKED, UNAVAILABLE) else self.status


@dataclass(frozen=True)
class ArtifactResult:
    path: str  # as declared by the recipe, relative to the workdir
    status: str  # collected | missing | too_large | outside_workdir | not_a_file
    size: int | None = None
    sha256: str | None = None
    stored_at: str | None = None  # where the copy was written, when an artifacts directory was given


@dataclass(frozen=True)
class RunReport:
    recipe: str
    policy: str
    repo: str
    commit: str
    status: str  # ok | failed | timeout | "blocked: policy violation ..." | "unavailable: <tool>"
    steps: tuple[StepResult, ...]
    artifacts: tuple[ArtifactResult, ...] = ()
    duration_sec: float = 0.0
    started_at: str = ""
    sandbox: dict[str, str] = field(default_factory=dict)  # mechanism and caps, for the reader

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict:
        data = asdict(self)
        data["steps"] = [{**asdict(step), "verdict": step.verdict} for step in self.steps]
        return data

    def to_markdown(self, *, output_lines: int = 40) -> str:
        lines = [
            f"# Sandbox run: `{self.recipe}` — **{self.status}**",
            "",
            f"- repository: `{self.repo}` at `{self.commit}`",
            f"- policy: `{self.policy}`; started {self.started_at}; {self.duration_sec:.2f} s",
        ]
        if self.sandbox:
            lines.append("- sandbox: " + "; ".join(f"{k} {v}" for k, v in self.sandbox.items()))
        lines += ["", "| # | command | status | exit | seconds |", "|---|---|---|---|---|"]
        for index, step in enumerate(self.steps, 1):
            exit_code = "" if step.exit_code is None else str(step.exit_code)
            command = step.command.replace("|", "\\|")
            lines.append(f"| {index} | `{command}` | {step.verdict} | {exit_code} | {step.duration_sec:.2f} |")
        if self.artifacts:
            lines += ["", "## Artifacts", "", "| path | status | bytes | sha256 |", "|---|---|---|---|"]
            for art in self.artifacts:
                size = "" if art.size is None else str(art.size)
                lines.append(f"| `{art.path}` | {art.status} | {size} | {(art.sha256 or '')[:16]} |")
        for index, step in enumerate(self.steps, 1):
            for stream, text in (("stdout", step.stdout), ("stderr", step.stderr)):
                if text.strip():
                    tail = text.rstrip("\n").splitlines()[-output_lines:]
                    lines += ["", f"### step {index} {stream} (last {len(tail)} lines)", "", "```text", *tail, "```"]
        return "\n".join(lines) + "\n"
