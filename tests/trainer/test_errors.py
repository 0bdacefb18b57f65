"""One root for the trainer's exceptions: a caller catches TrainerError and has them all."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import trainer
from trainer.errors import TrainerError

# train.py is the candidate's file (it reads its profile at import); everything else is the harness.
MODULES = sorted(m.name for m in pkgutil.iter_modules(trainer.__path__) if m.name not in ("train", "__main__"))


def _exceptions(module_name: str) -> list[type[BaseException]]:
    module = importlib.import_module(f"trainer.{module_name}")
    return [obj for _, obj in inspect.getmembers(module, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__]


@pytest.mark.parametrize("module_name", MODULES + ["__main__"])
def test_every_trainer_exception_derives_from_trainer_error(module_name: str) -> None:
    for exc in _exceptions(module_name):
        assert issubclass(exc, TrainerError), f"trainer.{module_name}.{exc.__name__} is not a TrainerError"


def test_the_tree_has_the_classes_callers_catch_under_their_old_names_and_bases() -> None:
    from trainer.constants import UnknownProfile
    from trainer.contract import ContractError
    from trainer.data import DataError
    from trainer.data_format import DataFormatError
    from trainer.evaluate import EvalError
    from trainer.runner import RunnerError
    from trainer.sandbox import SandboxError, SandboxUnavailable

    for exc in (UnknownProfile, ContractError, DataError, DataFormatError, EvalError, RunnerError, SandboxError,
                SandboxUnavailable):
        assert issubclass(exc, TrainerError)
    assert issubclass(RunnerError, ValueError) and issubclass(SandboxError, RuntimeError)  # old except clauses
    assert len(_exceptions("errors")) == 1  # the root only: subclasses live beside their raisers
