"""Deployment pieces that need no Flower process: certificates, the Flower App, the schema."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fedgan.simulator.cli import app
from fedgan.simulator.engines.deployment import app_dir
from fedgan.simulator.engines.runner import run_federated
from fedgan.simulator.scenario import ScenarioError, validate
from typer.testing import CliRunner

from tests.conftest import tiny, tiny_raw


def test_certs_command_writes_a_ca_a_server_cert_for_loopback_and_node_keys(
    tmp_path: Path,
) -> None:
    out = tmp_path / "certs"
    res = CliRunner().invoke(app, ["certs", str(out), "--nodes", "2"])
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert names == {"ca.crt", "ca.key", "server.pem", "server.key"} | {
        f"node-{i}.{e}" for i in range(2) for e in ("key", "pub")
    }
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    # The server certificate is signed by the CA (raises if not) and names the loopback.
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    # The server key is the certificate's key.
    key = serialization.load_pem_private_key((out / "server.key").read_bytes(), None)
    assert key.public_key() == server.public_key()
    # Node keys: ECDSA P-384 in OpenSSH format (what flwr 1.42 accepts), private files 0600.
    for i in range(2):
        priv = serialization.load_ssh_private_key((out / f"node-{i}.key").read_bytes(), None)
        assert isinstance(priv, ec.EllipticCurvePrivateKey)
        assert priv.curve.name == "secp384r1"
        pub_line = (out / f"node-{i}.pub").read_text()
        assert pub_line.startswith("ecdsa-sha2-nistp384 ")
        pub = serialization.load_ssh_public_key(pub_line.encode())
        assert pub == priv.public_key()
        assert stat.S_IMODE((out / f"node-{i}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "server.key").stat().st_mode) == 0o600


def test_the_flower_app_builds_into_a_small_fab_without_tests() -> None:
    """engine: deployment and `flwr run .` build one FAB from the project's pyproject."""
    import zipfile
    from io import BytesIO

    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(app_dir(["scenario", "run-dir", "scenario-file"]))
    names = zipfile.ZipFile(BytesIO(fab)).namelist()
    assert {"server/app.py", "clients/app.py", "wire/records.py", "simulator/scenario.py"} <= set(
        names
    )
    assert "scenarios/quickstart.yaml" in names
    assert not [
        n
        for n in names
        if n.split("/")[0] in ("tests", "benchmarks", "docs", "runs") or "__pycache__" in n
    ]
    assert len(fab) < 2_000_000  # Flower refuses FABs over 10 MB


def test_undeclared_run_config_keys_are_refused_before_submitting() -> None:
    from fedgan.simulator.engines.deployment import DeploymentError

    with pytest.raises(DeploymentError, match="does not declare no-such-key"):
        app_dir(["scenario", "no-such-key"])


def test_deployment_engine_fields_are_validated() -> None:
    s = tiny(engine={"name": "deployment", "address": "10.0.0.5:9093", "run_timeout": 60})
    assert s.engine.address == "10.0.0.5:9093"
    cases = {
        "engine.name": {"name": "kubernetes"},
        "engine.root_certificates": {"name": "ray", "root_certificates": "ca.crt"},
        "engine.address": {"name": "deployment", "address": "http://127.0.0.1"},
        "engine.run_timeout": {"name": "deployment", "run_timeout": -1},
    }
    for field, engine in cases.items():
        with pytest.raises(ScenarioError) as info:
            validate(tiny_raw(engine=engine))
        text = str(info.value)
        assert field.split(".")[1] in text, (field, text)
    with pytest.raises(ScenarioError, match="deployment"):
        validate(tiny_raw(engine={"name": "kubernetes"}))


def test_a_missing_root_certificate_is_named_before_anything_runs(tmp_path: Path) -> None:
    s = tiny(engine={"name": "deployment", "root_certificates": str(tmp_path / "nope.crt")})
    with pytest.raises(ValueError, match=r"engine\.root_certificates: no file"):
        run_federated(s, tmp_path / "runs")


def test_no_superlink_is_a_clear_error(tmp_path: Path) -> None:
    from fedgan.simulator.engines.deployment import DeploymentError
    from fedgan.simulator.engines.local_cluster import free_port

    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    s = tiny(engine={"name": "deployment", "address": address, "run_timeout": 30})
    with pytest.raises(DeploymentError, match=f"could not submit the run to {address}"):
        run_federated(s, tmp_path / "runs")
