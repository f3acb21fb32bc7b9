"""`--set NAME=VALUE`: hyperparameters over the defaults table, parsed by the type of each field."""

from __future__ import annotations

import dataclasses

import pytest

from restore.errors import RestoreError
from restore.samplers import SAMPLERS
from restore.samplers.defaults import TABLE, TASKS, defaults_for, with_options


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_has_defaults_for_every_task_it_can_take(sampler):
    """A sampler of any measurement has a row for every task; one for a single kind of operator, for the tasks of it."""
    tasks = set(TABLE[sampler]) - {key for key in TABLE[sampler] if "/" in key}
    assert tasks == set(TASKS) if SAMPLERS[sampler].operator_type is None else tasks <= set(TASKS) and tasks


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_default_round_trips_through_its_text(sampler):
    for task, entry in TABLE[sampler].items():
        params = entry.params
        texts = [f"{f.name}={getattr(params, f.name)}" for f in dataclasses.fields(params)
                 if getattr(params, f.name) is not None]
        assert with_options(params, texts, sampler) == params, (sampler, task)


def test_values_take_the_type_of_the_field():
    params = defaults_for("dpir", "deblur").params
    changed = with_options(params, ["lam=0.4", "cg_max_iter=7", "self_ensemble=false", "sigma_min=0.02"], "dpir")
    assert changed.lam == 0.4 and changed.cg_max_iter == 7 and changed.self_ensemble is False
    assert changed.sigma_min == 0.02 and changed.sigma_max == params.sigma_max  # the rest stays the default
    assert isinstance(with_options(params, ["lam=1"], "dpir").lam, int | float)
    none_default = defaults_for("dpir", "superres").params
    assert none_default.sigma_min is None and with_options(none_default, ["sigma_min=0.03"], "dpir").sigma_min == 0.03
    assert with_options(params, ["lam=0.1", "lam=0.3"], "dpir").lam == 0.3  # the last one wins, as on a command line
    reddiff = defaults_for("reddiff", "deblur").params
    assert with_options(reddiff, ["adam_betas=0.8,0.95"], "reddiff").adam_betas == (0.8, 0.95)


@pytest.mark.parametrize("option, message", [
    ("lamb=0.3", "dpir has no hyperparameter 'lamb'; its hyperparameters: lam=0.2"),
    ("cg_max_iter=2.5", "not a valid value"),
    ("self_ensemble=maybe", "not a valid value"),
    ("lam", "NAME=VALUE"),
    ("=3", "NAME=VALUE"),
    ("__class__=x", "no hyperparameter '__class__'"),  # attributes that are not fields are not settable
    ("adam_betas=0.9", "needs two adam_betas"),
])
def test_wrong_names_and_values_are_one_clear_error(option, message):
    sampler = "reddiff" if option.startswith("adam") else "dpir"
    with pytest.raises(RestoreError, match=message):
        with_options(defaults_for(sampler, "deblur").params, [option], sampler)
