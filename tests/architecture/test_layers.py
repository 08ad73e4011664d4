"""The layers hold: import-linter's contracts pass, no import cycle (function-local imports
counted), function-local imports only for heavy optional dependencies, no private name crosses a
package, and running a program imports only the runtime."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

import topologies as T

ROOT = Path(__file__).resolve().parents[2]


def _import_graph() -> ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" /
                                                  "import_graph.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod  # (dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None,
                    reason="import-linter is not installed (make test installs it)")
def test_import_linter_contracts_are_kept() -> None:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "lint_imports.sh")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout
    # the contracts saw eeopt.passes and eeopt.kernels (mapped in from passes/ and kernels/)
    farm = ROOT / "build" / "import-graph"
    code = ("import grimp; g = grimp.build_graph('eeopt', cache_dir=None); "
            "print(sorted(m for m in g.modules if m.startswith(('eeopt.passes', "
            "'eeopt.kernels'))))")
    found = subprocess.run([sys.executable, "-c", code], cwd=farm, capture_output=True,
                           text=True, env={"PYTHONPATH": str(farm), "PATH": ""}, timeout=120)
    assert found.returncode == 0, found.stderr
    assert "eeopt.passes.fuse_gate" in found.stdout and "eeopt.kernels.onnx_gate" in found.stdout


def test_no_cycle_no_hidden_import_no_private_name_across_packages() -> None:
    ig = _import_graph()
    mods = ig.modules()
    edges = ig.edges(mods)
    assert {"eeopt.runtime.ort", "eeopt.passes.fuse_gate", "eeopt.kernels.reference"} <= set(mods)
    assert ig.cycles(edges) == []
    assert ig.violations(mods, edges) == []


def test_the_import_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """A tree with a cycle hidden in a function, and a private name taken across packages."""
    ig = _import_graph()
    files = {
        "eeopt/__init__.py": "",
        "eeopt/a/__init__.py": "from eeopt.a.low import helper\n",
        "eeopt/a/low.py": textwrap.dedent("""
            def helper():
                from eeopt.b.high import run  # hides a cycle
                return run
            def _secret():
                return 1
            """),
        "eeopt/b/__init__.py": "",
        "eeopt/b/high.py": "from eeopt.a.low import _secret, helper\n\ndef run():\n    pass\n",
        "passes/__init__.py": "",
        "kernels/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mods = ig.modules(tmp_path)
    edges = ig.edges(mods)
    found = ig.violations(mods, edges)
    assert any(v.startswith("import cycle: eeopt.a.low <-> eeopt.b.high") for v in found)
    assert any("imports eeopt.b.high inside a function" in v for v in found)
    assert any("imports _secret from eeopt.a.low, private to eeopt.a" in v for v in found)


def test_running_a_program_imports_only_the_runtime(tmp_path: Path) -> None:
    """In a fresh interpreter, eeopt.load(dir).run(x) on an onnxruntime program imports no
    torch, no onnx, and none of the compiler's layers."""
    import eeopt

    d = tmp_path / "p"
    eeopt.compile(T.make("residual", 0), d, example_inputs=T.example("residual", 4, 0),
                  threshold=0.5)
    x = tmp_path / "x.npy"
    import numpy as np

    np.save(x, T.example("residual", 8, 3)[0].numpy())
    code = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import eeopt
        result = eeopt.load({str(d)!r}).run(np.load({str(x)!r}))
        assert result.logits.shape[0] == 8
        print(json.dumps(sorted(sys.modules)))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "eeopt.runtime" in loaded and "onnxruntime" in loaded
    heavy = {"torch", "onnx", "tensorrt", "triton"}
    layers = {"eeopt.compiler", "eeopt.build", "eeopt.passes", "eeopt.frontend",
              "eeopt.analysis", "eeopt.planning", "eeopt.measure", "eeopt.gates",
              "eeopt.train", "eeopt.cascade", "eeopt.bench", "eeopt.cli", "eeopt.data"}
    bad = sorted(m for m in loaded
                 if m.split(".")[0] in heavy or any(m == p or m.startswith(p + ".")
                                                    for p in layers))
    assert bad == []
