"""Recipes: YAML files naming the commands to run, the artifacts to keep and the policy to obey.

::

    name: unit-tests
    policies: unit_tests
    steps:
      - run: coverage run -m pytest -q
    artifacts:
      - path: coverage.xml

Each file is checked against ``recipe.schema.json`` (shipped next to this module); a bad recipe
raises RecipeError listing every problem with where it is. Steps run without a shell: ``run`` is
split with ``shlex`` and its first word is the executable the policy judges.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from codex_core.schema import load_schema, validate

SCHEMA_PATH = Path(__file__).with_name("recipe.schema.json")
REPO_RECIPES = Path(__file__).resolve().parents[2] / "recipes"


class RecipeError(ValueError):
    """A recipe file is missing, not YAML, or does not match the recipe schema."""


@dataclass(frozen=True)
class RecipeStep:
    run: str
    name: str = ""

    @property
    def argv(self) -> tuple[str, ...]:
        return tuple(shlex.split(self.run))

    @property
    def label(self) -> str:
        return self.name or self.run


@dataclass(frozen=True)
class Recipe:
    name: str
    policy: str  # the name of a policy in configs/sandbox.policy.yaml (the YAML key is `policies`)
    steps: tuple[RecipeStep, ...]
    artifacts: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    description: str = ""
    source: str = "<mapping>"
    dependencies: tuple[str, ...] = ()  # requirement files installed from the policy's wheel cache first

    @property
    def tools(self) -> tuple[str, ...]:
        """Every executable the recipe needs, in order, without repeats."""
        return tuple(dict.fromkeys([*(step.argv[0] for step in self.steps), *self.requires]))


@cache
def recipe_schema() -> dict[str, Any]:
    return load_schema(SCHEMA_PATH)


def recipe_from_mapping(data: Any, source: str = "<mapping>") -> Recipe:
    errors = validate(data, recipe_schema())
    if not errors:
        for index, step in enumerate(data["steps"]):
            try:
                if not shlex.split(step["run"]):
                    errors.append(f"steps[{index}].run: no command in {step['run']!r}")
            except ValueError as exc:
                errors.append(f"steps[{index}].run: cannot be split into words ({exc}): {step['run']!r}")
    if errors:
        raise RecipeError(f"recipe {source} is invalid:\n  " + "\n  ".join(errors))
    return Recipe(
        name=data["name"],
        policy=data["policies"],
        steps=tuple(RecipeStep(run=s["run"], name=s.get("name", "")) for s in data["steps"]),
        artifacts=tuple(a["path"] for a in data.get("artifacts", ())),
        requires=tuple(data.get("requires", ())),
        description=data.get("description", ""),
        source=source,
        dependencies=tuple(data.get("dependencies", ())),
    )


def load_recipe(path: Path | str) -> Recipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} not found") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"recipe {path}: not valid YAML: {exc}") from None
    return recipe_from_mapping(data, str(path))


def load_recipes(directory: Path | str = REPO_RECIPES) -> dict[str, Recipe]:
    """Every ``*.yaml`` recipe of a directory, by recipe name (two files with one name: an error)."""
    recipes: dict[str, Recipe] = {}
    for path in sorted(Path(directory).glob("*.y*ml")):
        recipe = load_recipe(path)
        if recipe.name in recipes:
            raise RecipeError(f"recipe name {recipe.name!r} is used by {recipes[recipe.name].source} and {path}")
        recipes[recipe.name] = recipe
    return recipes


def find_recipe(name: str, directory: Path | str = REPO_RECIPES) -> Recipe:
    recipes = load_recipes(directory)
    if name not in recipes:
        raise RecipeError(f"no recipe named {name!r} in {directory}; known recipes: {', '.join(sorted(recipes))}")
    return recipes[name]
