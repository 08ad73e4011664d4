"""Loading a program runs no code from its directory unless the caller says it trusts it:
aoti and tensorrt programs (native code in their stage files) are refused by default, before
torch is imported or any stage package loaded."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import eeopt
from eeopt.errors import BackendUnavailableError, ManifestError
from eeopt.program import MANIFEST_NAME
from eeopt.runtime import NATIVE

import topologies as T

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def native_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An onnxruntime program rewritten to claim each native backend, its stage files replaced
    by bytes that are not a package (with matching sha256s: integrity holds, trust does not)."""
    root = tmp_path_factory.mktemp("trust")
    eeopt.compile(T.make("longskip", 0), root / "ort", example_inputs=T.example("longskip", 4, 0),
                  threshold=0.5)
    out = {}
    for backend in ("aoti", "tensorrt"):
        d = root / backend
        d.mkdir()
        man = json.loads((root / "ort" / MANIFEST_NAME).read_text())
        man["backend"] = backend
        for st in man["stages"]:
            blob = b"\x7fELF not really a package " + st["file"].encode()
            st["file"] = st["file"].replace(".onnx", ".pt2" if backend == "aoti" else ".engine")
            (d / st["file"]).write_bytes(blob)
            st["sha256"] = hashlib.sha256(blob).hexdigest()
        (d / MANIFEST_NAME).write_text(json.dumps(man))
        out[backend] = d
    return out


def test_native_programs_are_refused_by_default(native_dirs: dict[str, Path]) -> None:
    assert {"aoti", "tensorrt"} == NATIVE
    for backend, d in native_dirs.items():
        with pytest.raises(ManifestError, match=f"is a '{backend}' program: its stage files hold "
                                                "native code") as info:
            eeopt.load(d)
        assert "allow_native=True" in str(info.value) and "\n" not in str(info.value)
    pytest.importorskip("torch")
    with pytest.raises(BackendUnavailableError, match="cannot load AOTInductor package"):
        eeopt.load(native_dirs["aoti"], allow_native=True)  # trusted: it tries to load it
    from eeopt.runtime import load_torch

    with pytest.raises(ManifestError, match="allow_native=True"):
        load_torch(native_dirs["aoti"])


def test_refused_before_anything_native_is_loaded(native_dirs: dict[str, Path]) -> None:
    """In a fresh interpreter: the refusal comes before torch is even imported, and no
    package loader is called (the sha256 check reads the stage files only as bytes)."""
    code = textwrap.dedent(f"""
        import sys
        import eeopt
        import eeopt.runtime.aoti as aoti
        def never(*a, **k):
            raise SystemExit("a stage package was loaded")
        aoti.load_package = never
        try:
            eeopt.load({str(native_dirs["aoti"])!r})
            raise SystemExit("loaded")
        except eeopt.errors.ManifestError as e:
            print("refused:", e)
        assert "torch" not in sys.modules, "torch was imported"
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("refused:") and "native code" in proc.stdout


def test_the_command_line_asks_for_allow_native(native_dirs: dict[str, Path],
                                                 tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", T.example("longskip", 4, 1)[0].numpy())
    args = [sys.executable, "-m", "eeopt", "run", str(native_dirs["aoti"]), "--input",
            str(tmp_path / "x.npy"), "--output", str(tmp_path / "o.npz")]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("eeopt run: error: ") and "with --allow-native" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "o.npz").exists()
    binary = ROOT / "build" / "cpp" / "eeopt_run"
    if binary.is_file():  # the C++ runtime runs onnxruntime programs only
        cpp = subprocess.run([str(binary), str(native_dirs["aoti"]), "--input",
                              f"x={tmp_path / 'x.npy'}", "--exits", str(tmp_path / "e.npy"),
                              "--logits", str(tmp_path / "l.npy")], capture_output=True,
                             text=True, timeout=120)
        assert cpp.returncode == 1 and "was compiled for backend 'aoti'" in cpp.stderr
