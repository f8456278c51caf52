"""The tutorials are exercises whose outcome is known: each notebook under docs/tutorials runs in
quick mode (FEDGAN_QUICK=1) in a fresh kernel and writes what the reader should see to a JSON
file (FEDGAN_TUTORIAL_RESULTS); these tests check it against theory and hand computation."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import pytest

WHY = "the docs extra is not installed: pip install -e '.[docs]'"
nbformat = pytest.importorskip("nbformat", reason=WHY)
nbclient = pytest.importorskip("nbclient", reason=WHY)
pytest.importorskip("ipykernel", reason=WHY)

TUTORIALS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
QUICK_LIMIT_S = 90  # each is ≈ 5–35 s on 2 cores; the limit only catches a runaway loop


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run one notebook in quick mode in a kernel of this interpreter; its results JSON."""
    kernels = tmp_path / "jupyter" / "kernels" / "fedgan-tests"
    kernels.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "language": "python", "display_name": "fedgan tests"}
    (kernels / "kernel.json").write_text(json.dumps(spec))
    out = tmp_path / "results.json"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("FEDGAN_QUICK", "1")
    monkeypatch.setenv("FEDGAN_TUTORIAL_RESULTS", str(out))
    monkeypatch.setenv("FEDGAN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("FEDGAN_TUTORIAL_DIR", str(tmp_path / "project"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    start = time.monotonic()
    nbclient.NotebookClient(
        nb,
        timeout=QUICK_LIMIT_S,
        kernel_name="fedgan-tests",
        resources={"metadata": {"path": str(TUTORIALS)}},
    ).execute()
    assert time.monotonic() - start < 2 * QUICK_LIMIT_S
    return json.loads(out.read_text())


def test_every_tutorial_is_tested_and_states_what_to_see() -> None:
    """Seven notebooks, each with a 'What you should see' cell and a QUICK switch; no outputs
    are committed (the site renders them unexecuted)."""
    names = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
    tested = sorted(n for n in globals() if n.startswith("test_tutorial_"))
    assert len(names) == 7 and len(tested) == 7, (names, tested)
    for name in names:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        assert "What you should see" in text, name
        assert 'QUICK = os.environ.get("FEDGAN_QUICK", "1") != "0"' in text, name
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), name


def test_tutorial_1_saturating_gradient_vanishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("01-saturating-loss.ipynb", tmp_path, monkeypatch)
    # d/dv of −softplus(v) is −σ(v) = −D, of softplus(−v) is −(1 − D): float32 rounding only.
    assert r["logit_error"] < 1e-5
    # ∇θ ℓ = ℓ'(v) ∇θ v with one ∇θ v for both losses: the ratio is D / (1 − D), per sample.
    assert r["ratio_error"] < 1e-3
    # The critic won: median D(G(z)) below 1e-3, so the ratio there is below ~1e-2 by theory.
    assert r["median_d_last"] < 1e-3 and r["n_won"] >= 256
    assert r["ratio_at_zero"] < 1e-2  # two orders of magnitude at least
    # The non-saturating signal grew as the critic won; the saturating one shrank.
    assert r["ns_grad_last"] > 5 * r["ns_grad_first"]
    assert r["sat_grad_last"] < 0.5 * r["sat_grad_first"]


def test_tutorial_2_simultaneous_play_spirals_out_and_the_penalty_damps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("02-rotation.ipynb", tmp_path, monkeypatch)
    T = r["steps"]
    eig = sorted(complex(a, b).imag for a, b in r["eigenvalues"])
    assert all(abs(a) < 1e-9 for a, _ in r["eigenvalues"]) and eig == pytest.approx([-1, 1])
    lam = 0.5  # the penalty's weight: eigenvalues λ ± i√(1 − λ²)
    for re, im in r["penalty_eigenvalues"]:
        assert re == pytest.approx(lam, abs=1e-9)
        assert abs(im) == pytest.approx(math.sqrt(1 - lam**2))
    final = r["final"]
    # |1 − η·(±i)| = √(1 + η²) per step, from distance 1.
    assert final["simultaneous, η = 0.1"] == pytest.approx((1 + 0.01) ** (T / 2), rel=1e-4)
    assert final["simultaneous, η = 0.02"] == pytest.approx((1 + 0.0004) ** (T / 2), rel=1e-4)
    assert final["simultaneous, η = 0.1"] > final["simultaneous, η = 0.02"] > 1
    # Alternating steps: determinant 1, a bounded orbit around distance 1.
    assert r["alternating_min"] > 0.9 and r["alternating_max"] < 1.1
    # Damped: |1 − η(λ ± i√(1 − λ²))| = √((1 − ηλ)² + η²(1 − λ²)) per step.
    rate = math.sqrt((1 - 0.1 * lam) ** 2 + 0.01 * (1 - lam**2))
    assert final["simultaneous + penalty on data, η = 0.1"] == pytest.approx(rate**T, rel=0.1)
    assert final["simultaneous + penalty on data, η = 0.1"] < 1e-5


def test_tutorial_3_clipping_caps_the_slope_and_two_branches_escape_spectral_norm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("03-lipschitz-controls.ipynb", tmp_path, monkeypatch)
    m = r["measured"]
    # Entries in [−c, c]: ‖W‖₂ ≤ ‖W‖_F ≤ c√(nm); 2 → 64 → 64 → 1 with c = 0.01.
    bound = 0.01 * math.sqrt(64 * 2) * 0.01 * math.sqrt(64 * 64) * 0.01 * math.sqrt(64)
    assert r["hand_bound"] == pytest.approx(bound)
    clip = m["weight clip"]
    assert clip["lipschitz"] <= bound
    assert clip["at_edge_before"] == 0.0 and clip["at_edge_after"] > 0.2  # the pile-up starts
    # The gradient penalty holds the slope near 1 where it samples.
    assert 0.7 < m["gradient penalty"]["mean_grad_interpolates"] < 1.3
    # Spectral norm: each layer ≈ 1 (one power iteration: a little above is allowed).
    for name in ("spectral norm", "spectral norm, two branches"):
        assert all(0.9 < x < 1.2 for x in m[name]["layer_norms"]), name
    chain, two = m["spectral norm"], m["spectral norm, two branches"]
    assert chain["lipschitz"] <= chain["layer_product"]
    # Two branches: above either branch's certificate, below their sum.
    assert two["lipschitz"] > 1.05 * max(r["branch_products"])
    assert two["lipschitz"] <= sum(r["branch_products"]) + 1e-6
    assert two["bound"] == pytest.approx(sum(r["branch_products"]), rel=1e-5)


def test_tutorial_4_prdc_tells_mode_dropping_from_manifold_collapse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("04-prdc.ipynb", tmp_path, monkeypatch)
    n, m, k = 4000, 2500, 5

    def ceiling(n_real: int) -> float:  # Naeem et al. 2020, eq. 6, by hand
        return 1 - math.prod((n_real - i) / (m + n_real - i) for i in range(1, k + 1))

    assert r["ceiling"] == pytest.approx(ceiling(n))
    t = r["totals"]
    assert t["perfect"]["precision"] > 0.97 and t["perfect"]["recall"] > 0.97
    assert t["perfect"]["density"] == pytest.approx(1.0, abs=0.05)
    assert t["perfect"]["coverage"] == pytest.approx(ceiling(n), abs=0.03)
    # Six of eight equal modes: 3/4 of the real points can be recalled or covered.
    assert t["mode dropping"]["precision"] > 0.97
    assert t["mode dropping"]["recall"] == pytest.approx(0.75, abs=0.02)
    assert t["mode dropping"]["coverage"] == pytest.approx(0.75 * ceiling(3 * n // 4), abs=0.03)
    assert all(v == 0.0 for v in t["manifold collapse"].values())
    assert t["blur"]["precision"] < 0.7 and t["blur"]["recall"] > 0.97
    assert r["labels"] == {
        "perfect": "healthy",
        "mode dropping": "mode_dropping",
        "manifold collapse": "manifold_collapse",
        "blur": "low_fidelity",
        "dropping + strays": "mode_dropping",
    }
    assert r["forgotten"]["mode dropping"] == [0, 1] == r["forgotten"]["dropping + strays"]
    assert r["forgotten"]["perfect"] == [] == r["forgotten"]["blur"]
    # The recall trap: strays lift the dropped modes' recall, not their coverage.
    strays, clean = r["per_mode"]["dropping + strays"], r["per_mode"]["mode dropping"]
    for g in (0, 1):
        assert clean["recall"][g] == 0.0 and strays["recall"][g] > 0.5
        assert strays["coverage"][g] < 0.05
    assert r["mass_ratio"]["mode dropping"]["0"] == 0.0


def test_tutorial_5_fedavg_forgets_what_only_client_0_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("05-federated-forgetting.ipynb", tmp_path, monkeypatch)
    rounds = r["rounds"]
    assert r["forgotten"]["fedavg"]["mode"] == ["0", "1"]
    assert r["holders"]["0"] == [0] == r["holders"]["1"]
    assert all(r["holders"][str(g)] == [0, 1, 2, 3, 4] for g in range(2, 8))
    # Client 0 by hand: 2 × 400 minority training points + 7,200 / 5 majority ones, 20 %
    # held out stratified: served = 1,440 / 2,240 once modes 0 and 1 are forgotten.
    client, share = r["worst"]
    assert client == 0 and share == pytest.approx(1440 / 2240, abs=0.01)
    assert all(r["served"][str(c)] == 1.0 for c in range(1, 5))
    assert r["minority"] == ["0", "1"]  # 5 % ≤ minority_share and < 1/8
    assert "mode 0, 1 (held by client 0) forgotten" in r["story"]
    # The matched twin: one scope, as many generator steps as rounds × local steps.
    assert r["twin_scopes"] == ["centralized"] and r["twin_last_step"] == rounds * 10
    fed, twin = (sum(r["mass_ratio"][k].values()) for k in ("fedavg", "twin"))
    assert twin > max(3 * fed, 0.05)
    # What travels: FedAvg both networks (17,154 + 17,025 float32) each way, 5 clients a round.
    params = 5 * 4 * ((2 * 128 + 128) + (128 * 128 + 128) + (128 * 2 + 2) + (2 * 128 + 128)
                      + (128 * 128 + 128) + (128 + 1))
    assert params == 683_580
    fedavg, uagan = r["travel"]["FedAvg"], r["travel"]["UA-GAN"]
    assert params <= fedavg["fed.bytes_down"] <= 1.02 * params
    assert fedavg["fed.bytes_up"] == fedavg["fed.bytes_down"]
    # UA-GAN's answers: 10 steps × 5 clients × a batch of 128 × (logit + 2-D gradient).
    assert 10 * 5 * 128 * 3 * 4 <= uagan["fed.bytes_up"] < 0.2 * fedavg["fed.bytes_up"]
    assert Path(r["report"]).is_file() and "forgotten" in Path(r["report"]).read_text()
    assert "0 (worst)" in r["inspect"]


def test_tutorial_6_your_table_and_your_strategy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("06-your-data-and-strategy.ipynb", tmp_path, monkeypatch)
    paths = [p.split(":")[0] for p in r["mistakes"]]
    assert paths == ["federation.rouns", "strategy.params.power"]
    assert "must be a number" in r["mistakes"][1]
    assert r["clean"] == []
    assert r["groupings"] == ["sex", "region", "sex|region"]
    assert r["intersection_groups"] == ["F|north", "F|south", "M|north", "M|south"]
    counts = r["csv_counts"]
    f_rows = counts["F|north"] + counts["F|south"]
    total = sum(counts.values())
    assert r["sex_weight"]["F"] == pytest.approx(f_rows / total, abs=0.005)  # held out stratified
    assert r["sex_minority"] == {"F": True, "M": False}  # 8 % ≤ 0.1 and < 1/2
    # power 0: every client weighs 1/3 in every round, whatever its size.
    assert len(r["weights"]) == r["rounds"]
    for w in r["weights"].values():
        assert w == pytest.approx([1 / 3] * 3)
    assert len({s[0] for s in r["sizes"].values()}) == 1  # the same clients every round
    assert r["sizes"]["1"][0] > r["sizes"]["1"][1]  # client 0, with the F rows, is larger
    # Every F training row (80 % of them) on client 0; M split evenly over the three.
    part = r["partition"]
    assert part["0"]["F"] == round(0.8 * f_rows) and part["1"]["F"] == 0 == part["2"]["F"]
    m_train = round(0.8 * (total - f_rows))
    assert [part[c]["M"] for c in "012"] == [m_train // 3] * 3


def test_tutorial_7_privacy_is_accounted_as_run_and_nothing_unreleased_reaches_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = execute("07-privacy-and-the-minority.ipynb", tmp_path, monkeypatch)
    acc = r["accountant"]
    # The values measured in shared/notes/privacy.md with dp-accounting, N = 1,000, m = 50,
    # σ = 1, 400 rounds, δ = 5e-4: Poisson 5.7, fixed (replace-one, σ/2) 103, no amplification 275.
    assert acc["poisson"] == pytest.approx(5.7, rel=0.02)
    assert acc["fixed"] == pytest.approx(103, rel=0.02)
    assert acc["flower"] == pytest.approx(275, rel=0.02)
    # A larger q (fewer points, the same batch) spends more ε per step: it needs more noise.
    assert r["sigma"]["1152"] > r["sigma"]["1792"]
    # Calibrated: every private run ends at or just below its target.
    for name, target in (("twin, ε = 10", 10.0), ("twin, ε = 1", 1.0), ("FedAvg, ε = 10", 10.0)):
        assert 0.9 * target <= r["runs"][name]["epsilon"] <= target * (1 + 1e-9), name
    assert r["runs"]["twin, no DP"]["epsilon"] is None
    # Client 0 holds more points (a smaller q): it spends less than the others; the run's ε is
    # the largest client's.
    eps = r["client_epsilon"]
    assert eps["0"] < min(eps[c] for c in ("1", "2", "3", "4"))
    assert max(eps.values()) == pytest.approx(r["runs"]["FedAvg, ε = 10"]["epsilon"])
    # Withheld: no client statistic in the table, every client's kept in its own file.
    assert r["train_rows"] == 0
    assert r["instrumentation"] == [f"client-{c}.jsonl" for c in range(5)]
