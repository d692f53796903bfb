"""The sandbox core: recipes run on a throwaway copy of a repository with no network and kernel caps.

Framework-free: the Dagster job, the API and the CLI verbs are thin shells around :func:`run_recipe`.
"""

from codex_core.sandbox.confine import SANDBOX_WORKDIR, SandboxUnavailable
from codex_core.sandbox.policy import PolicyError, SandboxPolicy, load_policies, load_policy
from codex_core.sandbox.recipe import Recipe, RecipeError, RecipeStep, find_recipe, load_recipe, load_recipes
from codex_core.sandbox.report import ArtifactResult, RunReport, StepResult
from codex_core.sandbox.runner import default_tools_path, judge_executable, run_recipe
from codex_core.sandbox.store import RunStore, new_run_id
from codex_core.sandbox.workdir import WorkdirError

__all__ = [
    "SANDBOX_WORKDIR", "ArtifactResult", "PolicyError", "Recipe", "RecipeError", "RecipeStep", "RunReport",
    "RunStore", "SandboxPolicy", "SandboxUnavailable", "StepResult", "WorkdirError", "default_tools_path",
    "find_recipe", "judge_executable", "load_policies", "load_policy", "load_recipe", "load_recipes", "new_run_id",
    "run_recipe",
]
