"""Tasks by name: one registered class per task, the one name configs, entry points, checkpoints, the API
and ``python -m lib.predict`` use.

    @register_task("qaoe", aliases=("qa_open",))
    class OpenQATask(AnnotatedTask): ...

    get_task("qaoe")          # the class; "qa_open" (an alias) finds it too
    task_names()              # every registered name

The name is a config's ``type`` (``main_qaoe_mlm.py`` runs ``type: qaoe``; a multi-task entry's ``type``
picks its task) and the key of the task's settings in a checkpoint's ``config.json``. Aliases are older or
other names of the same task (the version-1 checkpoint keys ``match``, ``qa_open``, ``qa_choice``,
``caption``) and are accepted wherever a name is.

A new task is ONE module that defines a :class:`lib.tasks.common.Task` subclass and registers it. The
built-in tasks (:data:`BUILTIN`) are imported on first lookup; a task defined elsewhere registers when its
module is imported, e.g. by the program or test that uses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

BUILTIN: dict[str, str] = {
    "pretrain": "lib.tasks.pretrain",
    "retrieval": "lib.tasks.retrieval",
    "qaoe": "lib.tasks.qa_open",
    "qamc": "lib.tasks.qa_choice",
    "captioning": "lib.tasks.caption",
    "vtc": "lib.tasks.contrastive",
    "pem": "lib.tasks.entity_prompts",
    "paragraph-retrieval": "lib.tasks.long_form.paragraph_retrieval",
    "long-qa": "lib.tasks.long_form.qa",
    "long-classification": "lib.tasks.long_form.classification",
}
"""Name -> module that registers the task (imported lazily: each run pulls in only what it needs)."""

MULTI_TASK = "multi-task"
"""The config ``type`` of a run that trains several registered tasks as streams of one model."""

_T = TypeVar("_T", bound=type)
_TASKS: dict[str, type] = {}
_ALIASES: dict[str, str] = {}


class UnknownTaskError(KeyError):
    """No task is registered under the name (the message lists the known ones)."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_task(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[_T], _T]:
    """Class decorator: register a Task subclass under ``name`` (sets ``cls.type_name``) and ``aliases``."""
    if not name or name == MULTI_TASK:
        raise ValueError(f"task name {name!r} is reserved or empty")

    def wrap(cls: _T) -> _T:
        known = _TASKS.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"task {name!r} is already registered by {known.__module__}.{known.__qualname__}"
            )
        for alias in aliases:
            if _ALIASES.get(alias, name) != name or (alias in _TASKS and alias != name):
                raise ValueError(f"alias {alias!r} of task {name!r} already names another task")
        cls.type_name = name  # type: ignore[attr-defined]
        _TASKS[name] = cls
        _ALIASES.update({alias: name for alias in aliases})
        return cls

    return wrap


def canonical_name(name: str) -> str:
    """The registered name of ``name`` (itself, or the task an alias points to)."""
    _load(name)
    name = _ALIASES.get(name, name)
    if name not in _TASKS:
        raise UnknownTaskError(
            f"unknown task {name!r}; registered tasks: {', '.join(task_names())} (a task registers with "
            "lib.tasks.registry.register_task)"
        )
    return name


def get_task(name: str) -> type:
    """The Task class registered under ``name`` (or an alias)."""
    return _TASKS[canonical_name(name)]


def task_names() -> list[str]:
    """Every task name: the built-in ones and those registered so far."""
    return sorted({*BUILTIN, *_TASKS})


def _load(name: str) -> None:
    """Import the built-in module of ``name`` (or of the built-in task an alias may belong to)."""
    if name in _TASKS or name in _ALIASES:
        return
    if name in BUILTIN:
        importlib.import_module(BUILTIN[name])
        return
    for module in BUILTIN.values():  # an alias of a built-in task not imported yet
        importlib.import_module(module)
        if name in _ALIASES:
            return


def load_builtin_tasks() -> None:
    """Import every built-in task module (e.g. to list every alias)."""
    for module in BUILTIN.values():
        importlib.import_module(module)


__all__ = [
    "BUILTIN",
    "MULTI_TASK",
    "UnknownTaskError",
    "canonical_name",
    "get_task",
    "load_builtin_tasks",
    "register_task",
    "task_names",
]
