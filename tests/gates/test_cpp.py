"""The C++ runtime runs learned-gate programs (the twin's float route included) exactly as the
Python runtime does: no special case in either."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from gates.conftest import gate_data, path_of

import eeopt
from eeopt.gates import LEARNED_POLICIES, train_gates

ROOT = Path(__file__).resolve().parents[2]
EEOPT_RUN = ROOT / "build" / "cpp" / "eeopt_run"

if not EEOPT_RUN.is_file():
    pytest.skip(f"{EEOPT_RUN.relative_to(ROOT)} is missing; build it with scripts/build_cpp.sh",
                allow_module_level=True)


@pytest.mark.parametrize("policy", LEARNED_POLICIES)
def test_cpp_matches_python(policy: str, demo: dict[str, object], tmp_path: Path) -> None:
    gates = train_gates(policy, gate_data(demo), steps=60, progress=False)
    prog = eeopt.compile(path_of(demo), tmp_path / "p", policy=policy, gates=gates,
                         threshold=0.5)
    test = demo["test"]
    assert isinstance(test, dict)
    name = str(demo["name"])
    np.save(tmp_path / "x.npy", test[name])
    for thr in (None, [0.3, 0.6, 0.5]):
        cmd = [str(EEOPT_RUN), str(tmp_path / "p"), "--threads", "1", "--input",
               f"{name}={tmp_path / 'x.npy'}", "--logits", str(tmp_path / "l.npy"), "--exits",
               str(tmp_path / "e.npy")]
        if thr is not None:
            cmd += ["--thresholds", ",".join(map(str, thr))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        want = prog.run(test, thresholds=thr)
        np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), want.exit)
        np.testing.assert_allclose(np.load(tmp_path / "l.npy"), want.logits, rtol=1e-5,
                                   atol=1e-6)
