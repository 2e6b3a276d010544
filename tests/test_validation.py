"""The shared validation helpers and the components that now use them (integer keys, sampler steps)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from spectral_diffusion.diffusion.processes import FlowProcess, GaussianProcess
from spectral_diffusion.diffusion.samplers import ddim, time_grid, validate_sampler
from spectral_diffusion.diffusion.schedules import LinearSchedule, check_steps
from spectral_diffusion.optim import warmup_constant
from spectral_diffusion.utils.validation import ConfigError, check_bool, check_int, check_int_list, is_int


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_is_int_accepts_python_and_numpy_integers(value):
    assert is_int(value)
    result = check_int("k", value, 1, 5)
    assert result == 3 and type(result) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 3.0, 2.5, "3", None, torch.tensor(3)])
def test_is_int_rejects_bools_floats_and_strings(value):
    assert not is_int(value)
    with pytest.raises(ConfigError, match=r"^model\.width="):
        check_int("model.width", value)


@pytest.mark.parametrize(("minimum", "maximum", "value", "bounds"), [
    (1, None, 0, "an integer >= 1"),
    (None, 4, 5, "an integer <= 4"),
    (0, 4, -1, "an integer >= 0 and <= 4"),
    (None, None, 1.5, "an integer"),
])
def test_check_int_names_key_value_and_bounds(minimum, maximum, value, bounds):
    with pytest.raises(ConfigError) as error:
        check_int("sampler.steps", value, minimum, maximum)
    message = str(error.value)
    assert message.startswith(f"sampler.steps={value!r} ")
    assert message.endswith(f"it must be {bounds}")


def test_check_int_bounds_are_inclusive():
    assert check_int("k", 1, 1, 1) == 1
    assert check_int("k", -7) == -7


def test_check_int_list_names_the_bad_element_and_accepts_list_configs():
    assert check_int_list("model.channel_mults", OmegaConf.create([1, 2]), 1) == [1, 2]
    assert check_int_list("model.channel_mults", (1, np.int64(2)), 1) == [1, 2]
    assert check_int_list("model.attention_resolutions", (), 1) == []
    with pytest.raises(ConfigError, match=r"model\.channel_mults\[2\]=0 .* >= 1"):
        check_int_list("model.channel_mults", [1, 2, 0], 1)
    with pytest.raises(ConfigError, match=r"model\.channel_mults\[0\]=True"):
        check_int_list("model.channel_mults", [True], 1)
    with pytest.raises(ConfigError, match=r"model\.channel_mults='12' .* list of integers"):
        check_int_list("model.channel_mults", "12", 1)
    with pytest.raises(ConfigError, match=r"model\.channel_mults=\[\] .* at least one"):
        check_int_list("model.channel_mults", [], 1, allow_empty=False)


@pytest.mark.parametrize("value", [1, 0, "true", None, np.bool_(True)])
def test_check_bool_accepts_only_python_bools(value):
    with pytest.raises(ConfigError, match=r"model\.freq_attention=.* true or false"):
        check_bool("model.freq_attention", value)
    assert check_bool("model.freq_attention", False) is False


@pytest.mark.parametrize("steps", [0, True, 2.0, "4"])
def test_sampler_steps_are_checked_once_for_every_process(steps):
    """Schedules, the schedule-free flow and ``validate_sampler`` all report ``sampler.steps`` through
    ``check_steps``: the same message whichever process builds the grid."""
    with pytest.raises(ConfigError) as expected:
        check_steps(steps)
    processes = [GaussianProcess(LinearSchedule()), FlowProcess(), FlowProcess(LinearSchedule(discrete=False))]
    for process in processes:
        with pytest.raises(ConfigError) as error:
            time_grid(process, steps)
        assert str(error.value) == str(expected.value)
        with pytest.raises(ConfigError) as error:
            validate_sampler(functools.partial(ddim, steps=steps), process)
        assert str(error.value) == str(expected.value)


def test_numpy_step_counts_build_the_same_grid():
    for process in (GaussianProcess(LinearSchedule()), FlowProcess()):
        torch.testing.assert_close(time_grid(process, np.int64(5)), time_grid(process, 5))


def test_warmup_steps_use_the_shared_check():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = warmup_constant(optimizer, warmup_steps=np.int64(4))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match=r"scheduler\.warmup_steps=True .* >= 0"):
        warmup_constant(optimizer, warmup_steps=True)
