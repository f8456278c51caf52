"""The installed package claims one name: the wheel holds `fedgan` only, and it runs where a
top-level `server` package (another project's) is on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ]
    )
    if res.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{res.stdout}\n{res.stderr}")
    (whl,) = out.glob("fedgan-*.whl")
    return whl


def test_the_wheel_installs_only_fedgan(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/")[0] for n in z.namelist()}
        names = z.namelist()
    assert tops == {
        "fedgan",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    for sub in ("simulator", "server", "clients", "wire"):
        assert f"fedgan/{sub}/__init__.py" in names
    assert "fedgan/clients/app.py" in names and "fedgan/server/app.py" in names


def test_a_fresh_venv_with_a_decoy_server_package_runs_a_scenario(
    wheel: Path, tmp_path: Path
) -> None:
    """A fresh venv (its dependencies borrowed from this one's site-packages through a .pth
    line, which adds the folder without running the editable install's finder), the wheel
    installed in it, and a decoy top-level `server` that fails on import first on the path:
    a two-round run must not notice it."""
    venv = tmp_path / "venv"
    res = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert res.returncode == 0, res.stderr
    py = venv / "bin" / "python"
    site = Path(
        _run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    here = sysconfig.get_paths()["purelib"]
    (site / "borrowed.pth").write_text(here + "\n")
    res = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ]
    )
    assert res.returncode == 0, res.stdout + res.stderr
    decoy = tmp_path / "decoy"
    (decoy / "server").mkdir(parents=True)
    (decoy / "server" / "__init__.py").write_text("raise ImportError('the decoy server package')\n")
    (decoy / "clients").mkdir()
    (decoy / "clients" / "__init__.py").write_text(
        "raise ImportError('the decoy clients package')\n"
    )
    script = (
        "import fedgan, sys\n"
        "assert fedgan.__file__.startswith(sys.argv[1]), fedgan.__file__\n"
        "r = fedgan.run(sys.argv[2], ['federation.rounds=2', 'evaluation.every=2', "
        "'evaluation.n_samples=200'], out_dir=sys.argv[3])\n"
        "m = r.metrics\n"
        "assert set(m['round']) >= {1, 2}, sorted(set(m['round']))\n"
        "print('version', fedgan.__version__, 'rows', len(m))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(decoy)}
    env.pop("VIRTUAL_ENV", None)
    res = _run(
        [
            str(py),
            "-c",
            script,
            str(site),
            str(ROOT / "tests" / "golden" / "scenarios" / "quickstart.yaml"),
            str(tmp_path / "runs"),
        ],
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "version 0.1.0" in res.stdout
    # and the decoy is really first on the path: importing it by name fails
    res = _run([str(py), "-c", "import server"], env=env, cwd=tmp_path)
    assert "the decoy server package" in res.stderr
