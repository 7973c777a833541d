"""kexue.numerics: the CPU-ISA pins respect the user's settings, and pinned runs repeat bitwise."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kexue import numerics
from kexue.numerics import PINNED_ENV, cpu_numerics_info, pin_cpu_numerics

ALL_VARS = (*PINNED_ENV, *numerics.RELATED_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    """os.environ without any of the variables; whatever the test sets is undone afterwards."""
    for key in ALL_VARS:
        monkeypatch.setenv(key, "placeholder")   # recorded, so restored (or removed) at teardown
        monkeypatch.delenv(key)
    return os.environ


def test_sets_the_defaults_when_absent(clean_env):
    newly_set = pin_cpu_numerics()
    assert newly_set == PINNED_ENV
    assert {k: os.environ[k] for k in PINNED_ENV} == PINNED_ENV
    assert PINNED_ENV == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert numerics.FULL_PIN_ENV == {**PINNED_ENV, "MKL_CBWR": "COMPATIBLE"}


@pytest.mark.parametrize("key", list(PINNED_ENV))
@pytest.mark.parametrize("value", ["user-choice", ""])
def test_an_existing_value_wins(clean_env, monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    newly_set = pin_cpu_numerics()
    assert os.environ[key] == value
    assert key not in newly_set
    for other, default in PINNED_ENV.items():
        if other != key:
            assert os.environ[other] == default


def test_legacy_onednn_name_counts_as_a_user_setting():
    env = {"DNNL_MAX_CPU_ISA": "AVX512_CORE"}
    pin_cpu_numerics(env)
    # ONEDNN_MAX_CPU_ISA would override the user's DNNL_MAX_CPU_ISA, so it must stay unset.
    assert "ONEDNN_MAX_CPU_ISA" not in env
    assert env["DNNL_MAX_CPU_ISA"] == "AVX512_CORE"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and "MKL_CBWR" not in env      # MKL: opt-in only


def test_pin_into_a_given_mapping_leaves_os_environ_alone(clean_env):
    env = {}
    assert pin_cpu_numerics(env) == PINNED_ENV == env
    assert not any(k in os.environ for k in PINNED_ENV)


def test_cpu_numerics_info_keys():
    info = cpu_numerics_info()
    assert {"env", "cpu_capability", "num_threads", "torch", "cpu_model", "cpu_flags",
            "mkldnn_enabled", "machine"} <= info.keys()
    assert set(PINNED_ENV) <= info["env"].keys()
    assert isinstance(info["num_threads"], int) and info["num_threads"] >= 1
    assert isinstance(info["cpu_capability"], str) and info["cpu_capability"]


_TINY = r"""
import hashlib, json, sys
from kexue.numerics import pin_cpu_numerics
assert "torch" not in sys.modules          # pinning must be possible before torch is imported
pin_cpu_numerics()
import torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(2)
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(0)
x, y = torch.randn(64, 1, 14, 14, generator=g), torch.randint(0, 10, (64,), generator=g)
for _ in range(3):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
params = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
print(json.dumps({"sha": hashlib.sha256(params.numpy().tobytes()).hexdigest(), "loss": loss.item(),
                  "capability": torch.backends.cpu.get_cpu_capability()}))
"""


def test_two_pinned_runs_agree_bitwise():
    src = str(Path(numerics.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in ALL_VARS}
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    procs = [subprocess.Popen([sys.executable, "-c", _TINY], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " avx2 " in flags:
        assert outs[0]["capability"] == "AVX2"


def test_library_import_sets_nothing():
    env = {k: v for k, v in os.environ.items() if k not in ALL_VARS and k != "KEXUE_CPU_PINS"}
    code = "import os, kexue, kexue.optim, kexue.run; print(os.environ.get('ATEN_CPU_CAPABILITY'))"
    lib = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert lib.stdout.strip() == "None"                              # your code's process: untouched


def test_entry_points_are_recognised(tmp_path):
    import kexue
    assert kexue.started_as_entry_point(["python", "-m", "kexue.run", "04_adax"])
    assert kexue.started_as_entry_point(["python", "-mkexue.data"])
    assert not kexue.started_as_entry_point(["python", "-m", "pytest"])
    assert not kexue.started_as_entry_point(["python", "-c", "import kexue"])
    bench = Path(kexue.__file__).resolve().parents[2] / "benchmarks" / "adax_step_time.py"
    assert kexue.started_as_entry_point(["python", "-X", "dev", str(bench)])
    assert not kexue.started_as_entry_point(["python", str(tmp_path / "benchmarks" / "x.py")])   # not the project's


def test_entry_point_process_pins_before_work_unless_switched_off():
    env = {k: v for k, v in os.environ.items() if k not in ALL_VARS and k != "KEXUE_CPU_PINS"}
    # The package's import-time check, in a process that looks like `python -m kexue.run`:
    probe = ("import sys; sys.orig_argv = ['python', '-m', 'kexue.run']; "
             "import kexue, os; print(os.environ.get('ATEN_CPU_CAPABILITY'))")
    on = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "avx2"
    off = subprocess.run([sys.executable, "-c", probe], env={**env, "KEXUE_CPU_PINS": "0"}, capture_output=True,
                         text=True, check=True)
    assert off.stdout.strip() == "None"
    import kexue
    pinned = {**env}
    assert kexue.pin_entry_point(pinned) == PINNED_ENV and pinned["ATEN_CPU_CAPABILITY"] == "avx2"
    off_env = {**env, "KEXUE_CPU_PINS": "0"}
    assert kexue.pin_entry_point(off_env) == {} and "ATEN_CPU_CAPABILITY" not in off_env


def test_help_lists_every_module():
    import pkgutil
    import pydoc
    import kexue
    found = sorted(m.name for m in pkgutil.iter_modules(kexue.__path__))
    assert sorted(kexue.MODULES) == found and {"diffusion", "simbert", "optim", "run"} <= set(found)
    text = pydoc.render_doc(kexue, renderer=pydoc.plaintext)
    for name in found:
        assert f"`{name}`" in kexue.__doc__, name
        assert name in text
