"""The infer stage (ptychopipe.infer): inferred.h5 contract, ratios, stale-model refusal."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptychopipe import infer as I
from ptychopipe import network as net
from ptychopipe.artifacts import ArtifactError, Inferred, Normalized, Simulated, read_telemetry
from ptychopipe.config import stage_config, to_json
from ptychopipe.network import poisson_deviance_np
from ptychopipe.stages import infer as infer_stage
from ptychopipe.stages import train as train_stage
from pipeline_helpers import build_data


@pytest.fixture(scope="module")
def gs2_run(tmp_path_factory):
    """ci gs2_ideal: data stages, train, infer. Returns (folder, params)."""
    d = tmp_path_factory.mktemp("infer") / "gs2_ideal"
    data = build_data(d.parent, "gs2_ideal")
    params, norm = data["params"], data["normalized"]
    train_stage.run(stage_config(params, "train"), "gs2_ideal", normalized=norm, out=d / "model.keras",
                    history=d / "train.h5")
    infer_stage.run(stage_config(params, "infer"), "gs2_ideal", normalized=norm, model=d / "model.keras",
                    out=d / "inferred.h5")
    return d, params


@pytest.mark.stage
def test_inferred_h5_contract(gs2_run):
    d, params = gs2_run
    inf = Inferred.read(d / "inferred.h5")
    norm = Normalized.read(d / "normalized.h5")
    sim = Simulated.read(d / "simulated.h5")
    test = norm.sets["test"]
    b, c = test.indices.shape
    assert c == 4
    assert inf.amplitude.shape == inf.phase.shape == (b, c, 64, 64)
    assert inf.amplitude.dtype == inf.phase.dtype == np.float32
    assert inf.amplitude.min() >= 0 and np.abs(inf.phase).max() <= np.pi
    np.testing.assert_array_equal(inf.indices, test.indices)
    # global patch centres = group centre + offset = the simulated scan positions
    np.testing.assert_allclose(inf.positions, sim.positions[inf.indices], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(inf.probe, norm.probe)
    assert inf.attrs["config_json"] == to_json(stage_config(params, "infer"))
    # the stored patches and attrs are what the model predicts (predicted again here)
    model = I.load_model(d / "model.keras")
    out = I.predict(model, test.amplitude, test.offsets, batch_size=params["infer"]["batch_size"])
    np.testing.assert_allclose(np.moveaxis(out["amplitude"], -1, 1), inf.amplitude, rtol=1e-5, atol=1e-7)
    # another batch size changes float32 round-off, which the group estimate's iterations
    # amplify in ill-conditioned groups (measured: 1.4e-3 at most, 0.4 % of the pixels > 1e-4)
    out7 = I.predict(model, test.amplitude, test.offsets, batch_size=7)
    np.testing.assert_allclose(out7["amplitude"], out["amplitude"], rtol=1e-2, atol=1e-6)
    ratio = out["counts"].astype(np.float64).sum() / test.counts.astype(np.float64).sum()
    np.testing.assert_allclose(inf.attrs["predicted_over_measured_counts"], ratio, rtol=1e-5)
    nll = poisson_deviance_np(test.counts, out["counts"], norm.mean_counts).mean()
    np.testing.assert_allclose(inf.attrs["poisson_nll"], nll, rtol=1e-4)
    with h5py.File(d / "inferred.h5") as f:
        assert f["amplitude"].attrs["units"] == "object amplitude" and f["phase"].attrs["units"] == "rad"
        assert f["positions"].attrs["units"] == "px"
        np.testing.assert_allclose(f["predicted_photons"][()].sum(axis=1).mean() /
                                   f["measured_photons"][()].sum(axis=1).mean(), ratio, rtol=1e-6)
        predicted_photons = f["predicted_photons"][()]
    # the stored patches (amplitude and phase) are the object that produced those counts:
    # through the forward model alone (physics_model, equal to NumPy's physics in
    # test_model) they give the model's λ̂ pixel by pixel (a conjugated or lost phase flips
    # or changes the patterns; the merged patches merge to themselves up to round-off), and
    # per pattern the stored predicted photons
    canvas = net.model_canvas(model)
    lam = net.physics_model(norm.probe, 2, canvas).predict(
        {"amplitude": np.moveaxis(inf.amplitude, 1, -1), "phase": np.moveaxis(inf.phase, 1, -1),
         "offsets": test.offsets}, verbose=0)["counts"].astype(np.float64)
    assert np.linalg.norm(lam - out["counts"]) / np.linalg.norm(out["counts"]) < 1e-3
    np.testing.assert_allclose(lam.sum(axis=(1, 2)), predicted_photons, rtol=1e-3)
    stats, ratios = read_telemetry(d / "inferred.h5")
    assert stats["amplitude"]["nan"] == 0 and stats["amplitude"]["shape"] == [b, c, 64, 64]
    np.testing.assert_allclose(ratios["amplitude_mean_over_estimate"],
                               inf.amplitude.mean(dtype=np.float64) / norm.amplitude_estimate, rtol=1e-6)
    # the trained model predicts the measured photons to within compare's 5 % tolerance
    # (measured on this ci model: 0.981) and patches of the estimated amplitude ā (1.044)
    assert abs(ratios["predicted_over_measured_counts"] - 1) < 0.05, ratios
    assert abs(ratios["amplitude_weighted_rms_over_estimate"] - 1) < 0.1, ratios


@pytest.mark.stage
def test_infer_refuses_a_model_trained_on_another_probe(gs2_run, tmp_path):
    d, params = gs2_run
    other = tmp_path / "normalized.h5"
    shutil.copy(d / "normalized.h5", other)
    with h5py.File(other, "r+") as f:
        f["probe"][...] = 2.0 * f["probe"][()]
    out = tmp_path / "inferred.h5"
    with pytest.raises(ArtifactError, match=r"model.keras: probe: differs from .*normalized.h5 probe"):
        infer_stage.run(stage_config(params, "infer"), "gs2_ideal", normalized=other, model=d / "model.keras",
                        out=out)
    assert not out.exists()


@pytest.mark.stage
def test_infer_refuses_a_missing_or_broken_model(gs2_run, tmp_path):
    d, params = gs2_run
    cfg = stage_config(params, "infer")
    with pytest.raises(ArtifactError, match=r"nope.keras: file not found"):
        infer_stage.run(cfg, "gs2_ideal", normalized=d / "normalized.h5", model=tmp_path / "nope.keras",
                        out=tmp_path / "inferred.h5")
    broken = tmp_path / "model.keras"
    broken.write_bytes((d / "model.keras").read_bytes()[:1000])  # truncated
    with pytest.raises(ArtifactError, match=r"model.keras: truncated or corrupted model \(1000 bytes, not a complete "
                                            r"\.keras zip archive\)"):
        infer_stage.run(cfg, "gs2_ideal", normalized=d / "normalized.h5", model=broken,
                        out=tmp_path / "inferred.h5")
    assert not (tmp_path / "inferred.h5").exists()


def _archive(path: Path) -> bytes:
    """A small zip archive like a .keras file (config.json, model.weights.h5)."""
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", '{"class_name": "Functional"}' * 20)
        z.writestr("model.weights.h5", bytes(range(256)) * 40)
    return path.read_bytes()


@pytest.mark.parametrize("case", ["truncated-end", "truncated-half", "empty", "crc"])
def test_a_damaged_model_keras_is_named_as_such(tmp_path, case):
    """Keras says "File not found" for a .keras file that exists but is cut short; the loader names
    the damage (truncated or corrupted), with the size."""
    path = tmp_path / "model.keras"
    data = _archive(path)
    if case == "truncated-end":
        path.write_bytes(data[:-30])
    elif case == "truncated-half":
        path.write_bytes(data[: len(data) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    else:  # a flipped byte inside the weights member: the archive is complete but its CRC fails
        i = data.index(bytes(range(256))) + 100
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    with pytest.raises(ArtifactError) as info:
        I.load_model(path)
    msg = str(info.value)
    assert "File not found" not in msg and "\n" not in msg
    if case == "crc":
        assert msg == (f"{path}: corrupted model (model.weights.h5 in the .keras archive fails its checksum); "
                       "re-run the train stage")
    else:
        assert msg.startswith(f"{path}: truncated or corrupted model ({path.stat().st_size} bytes"), msg


def test_a_directory_in_place_of_the_model_says_so(tmp_path):
    (tmp_path / "model.keras").mkdir()
    with pytest.raises(ArtifactError, match=r"model\.keras: is a directory; expected a file \(expected the train "
                                            r"stage's model\.keras\)$"):
        I.load_model(tmp_path / "model.keras")


@pytest.mark.parametrize("key", ["predicted_over_measured_counts", "poisson_nll", "mean_counts"])
@pytest.mark.stage
def test_inferred_attribute_missing_names_file_and_key(gs2_run, tmp_path, key):
    """compare and baseline read these attributes: without one, Inferred.read stops with one
    line naming the file and the key (not a KeyError deep in compare)."""
    import shutil

    import h5py


    d, _ = gs2_run
    path = tmp_path / "inferred.h5"
    shutil.copy(d / "inferred.h5", path)
    Inferred.read(path)  # the stage's own file passes
    with h5py.File(path, "r+") as f:
        del f.attrs[key]
    with pytest.raises(ArtifactError) as err:
        Inferred.read(path)
    assert str(err.value) == f"{path}: attribute {key} missing"
