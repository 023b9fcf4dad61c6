"""engine/devices.py: device and dtype choice, the O(1) first-parameter read, placement on use, sizes."""

from __future__ import annotations

import pytest
import torch

from engine.devices import DeviceManager, first_parameter, module_bytes, resolve_device, resolve_dtype


def test_dtype_auto_is_fp32_on_cpu_fp16_on_gpu_and_a_choice_is_honoured():
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cuda") == torch.float16
    assert resolve_dtype("cpu", "bf16") == torch.bfloat16
    assert resolve_dtype("cpu", "fp16") == torch.float16
    assert resolve_dtype("cuda", "fp32") == torch.float32


def test_device_choice():
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto") == "cpu"
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_first_parameter_is_the_first_and_follows_swaps():
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)))
    assert first_parameter(model) is next(model.parameters())
    swapped = torch.nn.Parameter(torch.zeros(4, 3))
    old = model[1][0]._parameters["weight"]
    model[1][0]._parameters["weight"] = swapped  # what a LoRA patch does
    assert first_parameter(model) is swapped is next(model.parameters())
    model[1][0]._parameters["weight"] = old
    model.to(torch.float64)
    assert first_parameter(model).dtype == torch.float64
    assert first_parameter(torch.nn.ReLU()) is None


def test_use_places_the_module_in_the_dtype_asked_for_and_counts_users():
    devices = DeviceManager("cpu", torch.float32)
    model = torch.nn.Linear(3, 2)
    with devices.use(model, torch.float64) as m:
        assert m is model and model.weight.dtype == torch.float64
        with devices.use(model, torch.float64):
            assert devices._in_use[id(model)] == 2
    assert devices._in_use[id(model)] == 0
    with devices.use(model):  # the manager's dtype
        assert model.weight.dtype == torch.float32


def test_module_bytes_counts_parameters_and_buffers():
    bn = torch.nn.BatchNorm1d(8)  # 2 x 8 parameters, 2 x 8 float buffers + a long counter
    assert module_bytes(bn) == (16 + 16) * 4 + 8
