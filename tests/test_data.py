"""The data layer offline: parsers on files the tests write (libsvm, idx, parquet), the checked
import, the parsed cache, canonical splits, synthetic stand-ins, the tasks on registered data,
suite validation of a missing dataset and the `hpo-bench data` command line."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from _runs import invoke, one_error_line
from hpo_bench import data, get_task
from hpo_bench.data import DatasetEntry, SourceFile
from hpo_bench.running.suite import SuiteError, load_suite
from hpo_bench.core.task import TaskParamError

# A libsvm file with comments, a blank line, gaps in the indices (1-based), an index-less row
# and a row that uses the last feature: the expected dense matrix is written beside it.
LIBSVM = b"""# a comment line
+1 1:0.5 3:2.0 # trailing comment
-1 2:-1.25 5:3
-1 4:1e-3

+1
+1 1:1 2:2 3:3 4:4 5:5
"""
LIBSVM_X = np.array([[0.5, 0, 2.0, 0, 0], [0, -1.25, 0, 0, 3], [0, 0, 0, 1e-3, 0], [0, 0, 0, 0, 0], [1, 2, 3, 4, 5]])
LIBSVM_Y = np.array([1.0, -1.0, -1.0, 1.0, 1.0])


def sha(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh data cache folder for one test."""
    monkeypatch.setenv("HPO_BENCH_DATA", str(tmp_path / "data"))
    data.clear_memory()
    yield tmp_path / "data"
    data.clear_memory()


@pytest.fixture
def registered():
    """Register entries for one test; they are removed afterwards."""
    names = []

    def add(entry: DatasetEntry) -> DatasetEntry:
        names.append(entry.name)
        return data.register(entry, replace=True)

    yield add
    for n in names:
        data.unregister(n)


def libsvm_entry(name="tiny-libsvm", checksum=None, *, files=("tiny.svm",), n=5, n_test=0, p=5, sparse=True):
    roles = ["train", "test"]
    return DatasetEntry(name=name, title="test file", format="libsvm", task="binary", n=n, n_test=n_test, p=p,
                        n_classes=2, sparse=sparse, density=None,
                        split="official-test-val20" if n_test else "permute-50-25-25",
                        files=tuple(SourceFile(f, f"http://127.0.0.1:9/{f}", checksum if i == 0 else None, None,
                                               roles[i]) for i, f in enumerate(files)))


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


# --------------------------------------------------------------------------- parsers
def test_libsvm_with_gaps_comments_and_one_based_indices_parses_to_the_written_matrix(cache, registered, tmp_path):
    from sklearn.datasets import load_svmlight_file

    src = tmp_path / "tiny.svm"
    src.write_bytes(LIBSVM)
    registered(libsvm_entry(checksum=sha(LIBSVM)))
    d = data.import_files("tiny-libsvm", [src])
    assert sp.isspmatrix_csr(d.x) and d.x.shape == (5, 5) and d.verified is True
    np.testing.assert_array_equal(d.x.toarray(), LIBSVM_X)
    np.testing.assert_array_equal(d.y, LIBSVM_Y)
    ref_x, ref_y = load_svmlight_file(str(src), n_features=5, zero_based=False)  # the round trip: same parser
    assert (d.x != ref_x).nnz == 0 and np.array_equal(d.y, ref_y)
    with pytest.raises(ValueError, match="read-only"):
        d.x.data[0] = 9.0


def test_a_truncated_compressed_libsvm_file_is_refused_and_deleted(cache, registered, tmp_path):
    blob = bz2.compress(LIBSVM * 50)
    src = tmp_path / "tiny.svm.bz2"
    src.write_bytes(blob[: len(blob) // 2])
    registered(libsvm_entry(files=("tiny.svm.bz2",)))
    with pytest.raises(data.CorruptDataError, match="tiny.svm.bz2.*deleted"):
        data.import_files("tiny-libsvm", [src], verify=False)
    assert not (data.raw_dir("tiny-libsvm") / "tiny.svm.bz2").exists()
    with pytest.raises(data.DatasetMissingError):
        data.load("tiny-libsvm")


def test_idx_pair_round_trips_and_a_truncated_idx_file_is_refused(cache, registered, tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(12, 4, 4), dtype=np.uint8)
    labs = (np.arange(12) % 3).astype(np.uint8)
    names = {"train-images-idx3-ubyte.gz": imgs[:8], "train-labels-idx1-ubyte.gz": labs[:8],
             "t10k-images-idx3-ubyte.gz": imgs[8:], "t10k-labels-idx1-ubyte.gz": labs[8:]}
    blobs = {k: gzip.compress(idx_bytes(v)) for k, v in names.items()}
    folder = tmp_path / "mnist-copy"
    folder.mkdir()
    for k, b in blobs.items():
        (folder / k).write_bytes(b)
    roles = ["train-images", "train-labels", "test-images", "test-labels"]
    entry = DatasetEntry(name="tiny-idx", title="t", format="idx", task="multiclass", n=8, n_test=4, p=16,
                         n_classes=3, sparse=False, density=None, split="official-test-val20",
                         files=tuple(SourceFile(k, f"http://127.0.0.1:9/{k}", sha(b), len(b), r)
                                     for (k, b), r in zip(blobs.items(), roles)))
    registered(entry)
    d = data.import_files("tiny-idx", [folder])  # a folder holding the four files
    np.testing.assert_array_equal(d.x, imgs[:8].reshape(8, 16))
    np.testing.assert_array_equal(d.x_test, imgs[8:].reshape(4, 16))
    assert d.y.dtype == np.int64 and list(d.y) == list(labs[:8]) and list(d.y_test) == list(labs[8:])
    # an idx file one byte short is refused, whatever its checksum
    short = idx_bytes(imgs[:8])[:-1]
    (tmp_path / "short.idx").write_bytes(short)
    with pytest.raises(data.CorruptDataError, match="must be 128 bytes, but got 127"):
        data._formats.read_idx(tmp_path / "short.idx")


def test_small_parquet_file_round_trips(cache, registered, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.arange(24, dtype=np.float64).reshape(8, 3)
    y = np.array([0, 1] * 4)
    pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1].astype(np.int32), "c": x[:, 2], "label": y}),
                   tmp_path / "t.parquet")
    blob = (tmp_path / "t.parquet").read_bytes()
    registered(DatasetEntry(name="tiny-parquet", title="t", format="parquet", task="binary", n=8, p=3, n_classes=2,
                            sparse=False, density=None, split="permute-50-25-25", target="label",
                            files=(SourceFile("t.parquet", "http://127.0.0.1:9/t.parquet", sha(blob), len(blob)),)))
    d = data.import_files("tiny-parquet", [tmp_path / "t.parquet"])
    np.testing.assert_array_equal(d.x, x)
    np.testing.assert_array_equal(d.y, y)


# --------------------------------------------------------------------------- import, cache, checksums
def test_import_refuses_a_checksum_mismatch_and_unverifiable_files_without_no_verify(cache, registered, tmp_path):
    src = tmp_path / "tiny.svm"
    src.write_bytes(LIBSVM)
    registered(libsvm_entry(checksum=sha(b"something else")))
    with pytest.raises(data.ChecksumError, match="does not match|has checksum sha256:") as exc:
        data.import_files("tiny-libsvm", [src])
    assert hashlib.sha256(LIBSVM).hexdigest() in str(exc.value) and exc.value.exit_code == 2
    assert not data.raw_dir("tiny-libsvm").exists() or not any(data.raw_dir("tiny-libsvm").iterdir())
    registered(libsvm_entry(checksum=None))
    with pytest.raises(data.UnverifiedSourceError, match="--no-verify"):
        data.import_files("tiny-libsvm", [src])
    d = data.import_files("tiny-libsvm", [src], verify=False)
    assert d.verified is False
    st = data.status("tiny-libsvm")
    assert st["verified"] is False and st["cached"] == "yes" and st["size"] == len(LIBSVM)
    manifest = json.loads((data.raw_dir("tiny-libsvm") / "manifest.json").read_text())
    assert manifest["files"]["tiny.svm"] == {"sha256": hashlib.sha256(LIBSVM).hexdigest(), "verified": False,
                                             "source": f"import:{src.resolve()}", "bytes": len(LIBSVM)}


def test_parsed_form_is_keyed_by_the_source_checksum_and_read_without_the_source(cache, registered, tmp_path):
    src = tmp_path / "tiny.svm"
    src.write_bytes(LIBSVM)
    registered(libsvm_entry())
    data.import_files("tiny-libsvm", [src], verify=False)
    first = data.parsed_path("tiny-libsvm")
    assert first.exists() and json.loads(first.with_suffix(".json").read_text())["shape"] == [5, 5]
    (data.raw_dir("tiny-libsvm") / "tiny.svm").unlink()  # the parsed form alone serves later loads
    data.clear_memory()
    np.testing.assert_array_equal(data.load("tiny-libsvm").x.toarray(), LIBSVM_X)
    src.write_bytes(LIBSVM.replace(b"0.5", b"0.25"))  # other source bytes: another key, parsed again
    data.import_files("tiny-libsvm", [src], verify=False)
    second = data.parsed_path("tiny-libsvm")
    assert second != first and data.load("tiny-libsvm").x[0, 0] == 0.25


def test_a_missing_dataset_names_the_fetch_and_the_import_command(cache):
    with pytest.raises(data.DatasetMissingError) as exc:
        data.load("ijcnn1")
    msg = str(exc.value)
    assert "'ijcnn1'" in msg and "`hpo-bench data fetch ijcnn1`" in msg and "`hpo-bench data import ijcnn1 FILE`" in msg
    with pytest.raises(data.UnknownDatasetError, match="unknown dataset 'nope'; known: ijcnn1, covtype.binary"):
        data.get("nope")


def test_every_bundled_scikit_learn_loader_is_registered():
    import sklearn.datasets as skd

    bundled = {e.loader for e in data.entries() if e.format == "sklearn"}
    # every load_* that reads a set shipped inside the wheel (images and file readers aside)
    shipped = {f"load_{n}" for n in ("diabetes", "breast_cancer", "digits", "wine", "iris", "linnerud")}
    assert bundled == shipped and all(hasattr(skd, f) for f in bundled)
    x, y = data.load("wine").x, data.load("wine").y
    assert x.shape == (178, 13) and set(np.unique(y)) == {0, 1, 2}
    for e in data.entries():
        assert e.licence and e.citation and e.split in data.SPLIT_RULES, e.name


# --------------------------------------------------------------------------- splits
def test_canonical_split_is_a_seeded_partition(registered, cache):
    rows = [f"{1 if i % 3 else -1} 1:{i + 1}" for i in range(40)]  # feature 1 = row number + 1
    registered(libsvm_entry("split-me", n=40, p=1))
    blob = ("\n".join(rows) + "\n").encode()
    (cache.parent / "tiny.svm").write_bytes(blob)
    data.import_files("split-me", [cache.parent / "tiny.svm"], verify=False)
    a, b, c = data.canonical_split("split-me", 3), data.canonical_split("split-me", 3), data.canonical_split("split-me", 4)
    ids = [np.asarray(part.todense()).ravel() for part in (a.x_train, a.x_val, a.x_test)]
    assert [len(i) for i in ids] == [20, 10, 10]
    assert sorted(np.concatenate(ids)) == list(range(1, 41))  # every row exactly once
    for u, v in zip(a, b):
        assert (u != v).nnz == 0 if sp.issparse(u) else np.array_equal(u, v)
    assert not np.array_equal(np.asarray(a.x_train.todense()), np.asarray(c.x_train.todense()))


def test_official_test_split_keeps_the_test_file_and_draws_a_fifth_of_train_for_validation():
    s = data.canonical_split("ijcnn1-like", 0, scale=0.01)
    n, n_test, _ = data._synthetic.scaled_shape(data.get("ijcnn1-like"), 0.01)
    assert len(s.y_val) == n // 5 and len(s.y_train) == n - n // 5 and len(s.y_test) == n_test
    again = data.canonical_split("ijcnn1-like", 0, scale=0.01)
    assert np.array_equal(s.x_val, again.x_val) and np.array_equal(s.y_test, again.y_test)


# --------------------------------------------------------------------------- synthetic stand-ins
@pytest.mark.parametrize("name", ["ijcnn1-like", "covtype-like", "real-sim-like", "rcv1-like", "news20-like",
                                  "mnist-like", "cadata-like"])
def test_stand_ins_have_the_real_sets_shape_and_sparsity_and_say_they_are_synthetic(name):
    entry = data.get(name)
    real = data.get(entry.stand_in_for)
    assert entry.synthetic and entry.kind == "synthetic stand-in" and entry.label() == f"{name} (synthetic stand-in)"
    assert (entry.n, entry.n_test, entry.p, entry.n_classes, entry.sparse) == (real.n, real.n_test, real.p,
                                                                             real.n_classes, real.sparse)
    scale = 0.02
    d = data.load(name, scale=scale)
    n, n_test, p = data._synthetic.scaled_shape(entry, scale)
    assert d.x.shape == (n, p) and (d.x_test is None) == (n_test == 0) and sp.issparse(d.x) == entry.sparse
    nnz = d.x.nnz if sp.issparse(d.x) else np.count_nonzero(d.x)
    density = nnz / (n * p)
    # mean of n * p Bernoulli(d) draws; p >> 1 with >= 1 forced per row: within 30% + 1 / p
    assert abs(density - real.density) <= 0.3 * real.density + 1.0 / p, (density, real.density)
    if entry.task == "binary":
        assert set(np.unique(d.y)) == {-1.0, 1.0}
        assert abs((d.y > 0).mean() - real.positive_fraction) < 0.02
    again = data._synthetic.generate(entry, scale)
    assert (abs(again["x"] - d.x)).max() == 0 and np.array_equal(again["y"], d.y)  # same arrays every time
    assert data.describe(name) == {"dataset_label": f"{name} (synthetic stand-in)", "dataset_kind": "synthetic stand-in",
                                   "dataset_stand_in_for": real.name}
    assert data.stand_in_of(real.name) == name and data.stand_in_of(name) is None


# --------------------------------------------------------------------------- tasks
def test_logistic_l2_on_a_registered_binary_file_and_its_hypergradient(cache, registered, tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 4))
    y = np.where(x @ [1.0, -2.0, 0.5, 0.0] + 0.5 * rng.standard_normal(60) > 0, 1, 2)  # labels 1 / 2, as covtype
    lines = [f"{y[i]} " + " ".join(f"{j + 1}:{x[i, j]:.17g}" for j in range(4)) for i in range(60)]
    (tmp_path / "bin.svm").write_text("\n".join(lines) + "\n")
    registered(libsvm_entry("bin-test", files=("bin.svm",), n=60, p=4, sparse=False))
    with pytest.raises(data.DatasetMissingError):
        get_task("logistic_l2", dataset="bin-test")
    data.import_files("bin-test", [tmp_path / "bin.svm"], verify=False)
    task = get_task("logistic_l2", dataset="bin-test", seed=2, lam0=0.1)
    assert task.n_train == 30 and task.x1_val.shape == (15, 5)
    assert set(task.y_train.tolist()) == {-1.0, 1.0}
    theta = task.space.init_theta() + 0.3 * torch.arange(4, dtype=torch.float64)
    g = task.reference_hypergradient(theta)
    v = torch.tensor([0.3, -0.5, 0.2, 0.7], dtype=torch.float64)
    h = 1e-5

    def f(t):
        return float(task.outer_loss(task.solve(t)))

    fd = (f(theta + h * v) - f(theta - h * v)) / (2 * h)
    # central difference: O(h^2) truncation plus the Newton solves' 1e-12 residuals over h
    assert float(g @ v) == pytest.approx(fd, rel=1e-5, abs=1e-8)
    assert task.describe()["dataset_label"] == "bin-test" and task.describe()["dataset_verified"] is False


def test_tasks_on_stand_ins_say_so_and_sparse_sets_too_large_to_densify_are_refused_up_front():
    lg = get_task("logistic_l2", dataset="ijcnn1-like", max_train=150, seed=1)
    assert lg.n_train == 150 and lg.n_params == 23 and lg.params["max_train"] == 150
    assert lg.describe()["dataset_label"] == "ijcnn1-like (synthetic stand-in)"
    rg = get_task("ridge_per_feature", dataset="cadata-like", max_train=80, seed=0)
    assert rg.n_train == 80 and rg.space.dim == 8 and rg.describe()["dataset_kind"] == "synthetic stand-in"
    hc = get_task("hyper_cleaning", dataset="mnist-like", n_train=40, n_val=30, n_test=30, n_classes=3, pool=7)
    assert hc.x_train.shape == (40, 17) and hc.params["dataset"] == "mnist-like"
    assert hc.describe()["dataset_label"] == "mnist-like (synthetic stand-in)"
    assert "dataset" not in get_task("hyper_cleaning", **hc.check_params).params  # digits' params as before
    with pytest.raises(TaskParamError,
                       match=r"one of \['synthetic', 'breast_cancer', 'text-like'\] or another registered binary"):
        get_task("logistic_l2", dataset="mnist")
    with pytest.raises(TaskParamError, match="parameter `pool` must be one of"):
        get_task("hyper_cleaning", dataset="mnist-like", pool=3)


# --------------------------------------------------------------------------- suite validation and CLI
SUITE = '''
seeds = [0]
[budget]
steps = 2
[[task]]
name = "logistic_l2"
params = { dataset = "ijcnn1" }
[[tuner]]
name = "random"
'''


def test_a_missing_dataset_stops_suite_validation_with_one_line(cache, tmp_path, monkeypatch, capsys):
    path = tmp_path / "needs-ijcnn1.toml"
    path.write_text(SUITE)
    with pytest.raises(SuiteError) as exc:
        load_suite(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and "task[0].params.dataset" in msg and "'ijcnn1'" in msg
    assert "`hpo-bench data fetch ijcnn1`" in msg and "`hpo-bench data import ijcnn1 FILE`" in msg
    code, _, err = invoke(monkeypatch, capsys, "run", str(path), "--out", str(tmp_path / "out"))
    assert code == 2 and "hpo-bench data fetch ijcnn1" in one_error_line(err)


def test_cli_data_list_path_and_bad_names(cache, monkeypatch, capsys, registered, tmp_path):
    code, out, _ = invoke(monkeypatch, capsys, "data", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)["datasets"]}
    assert code == 0 and {"ijcnn1", "mnist", "news20", "digits", "ijcnn1-like"} <= set(rows)
    assert rows["ijcnn1"]["cached"] == "no" and rows["digits"]["cached"] == "bundled"
    assert rows["ijcnn1"]["shape"] == [141691, 22] and rows["mnist"]["size"] == 11594722
    assert [f["name"] for f in rows["ijcnn1"]["files"]] == ["ijcnn1.bz2", "ijcnn1.t.bz2"]  # what `import` matches
    assert rows["mnist"]["files"][0]["checksum"] == "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"
    code, out, _ = invoke(monkeypatch, capsys, "data", "list")
    assert code == 0 and "real-sim-like" in out and "synthetic stand-in" in out
    code, out, _ = invoke(monkeypatch, capsys, "data", "path", "mnist")
    assert code == 0 and out.strip() == str(cache / "raw" / "mnist")
    for args in (("data", "path", "nope"), ("data", "fetch", "ijcnn1", "nope"), ("data", "import", "nope", "x")):
        code, _, err = invoke(monkeypatch, capsys, *args)
        line = one_error_line(err)
        assert code == 2 and "unknown dataset 'nope'; known: ijcnn1" in line and "mnist-like" in line
    src = tmp_path / "tiny.svm"
    src.write_bytes(LIBSVM)
    registered(libsvm_entry(checksum=sha(b"other bytes")))
    code, _, err = invoke(monkeypatch, capsys, "data", "import", "tiny-libsvm", str(src))
    assert code == 2 and "a corrupt or different copy" in one_error_line(err)
    code, out, _ = invoke(monkeypatch, capsys, "data", "import", "tiny-libsvm", str(src), "--no-verify")
    assert code == 0 and "NOT verified" in out
    code, _, err = invoke(monkeypatch, capsys, "data", "fetch", "ijcnn1")
    assert code == 2 and "--no-verify" in one_error_line(err)


def test_the_20_newsgroups_archive_is_vectorised_on_the_training_vocabulary(cache, registered, tmp_path):
    import io
    import tarfile

    docs = {"20news-bydate-train/alt.atheism/1": "god god reason", "20news-bydate-train/alt.atheism/2": "reason",
            "20news-bydate-train/comp.graphics/3": "pixel pixel pixel reason",
            "20news-bydate-test/alt.atheism/4": "god unseen", "20news-bydate-test/comp.graphics/5": "pixel"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in docs.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    (tmp_path / "20news-bydate.tar.gz").write_bytes(buf.getvalue())
    registered(DatasetEntry(name="tiny-20news", title="t", format="20news", task="multiclass", n=3, n_test=2, p=3,
                            n_classes=2, sparse=True, density=None, split="official-test-val20",
                            files=(SourceFile("20news-bydate.tar.gz", "http://127.0.0.1:9/x", sha(buf.getvalue()),
                                              role="archive"),)))
    d = data.import_files("tiny-20news", [tmp_path / "20news-bydate.tar.gz"])
    # vocabulary (sorted): god, pixel, reason; "unseen" is only in the test documents, so it is no feature
    x = d.x.toarray()
    np.testing.assert_allclose(x, [[2 / np.sqrt(5), 0, 1 / np.sqrt(5)], [0, 0, 1], [0, 3 / np.sqrt(10),
                                                                                    1 / np.sqrt(10)]], rtol=1e-15)
    np.testing.assert_allclose(d.x_test.toarray(), [[1, 0, 0], [0, 1, 0]], rtol=1e-15)
    assert list(d.y) == [0, 0, 1] and list(d.y_test) == [0, 1]


def test_first_available_prefers_cached_real_data_and_falls_back_on_the_stand_in(cache, registered, tmp_path):
    registered(libsvm_entry())
    assert not data.available("tiny-libsvm") and data.available("ijcnn1-like") and data.available("digits")
    assert data.first_available(["tiny-libsvm", "ijcnn1-like"]) == "ijcnn1-like"
    with pytest.raises(data.DatasetMissingError, match="hpo-bench data fetch tiny-libsvm"):
        data.first_available(["tiny-libsvm", "ijcnn1"])
    (tmp_path / "tiny.svm").write_bytes(LIBSVM)
    data.import_files("tiny-libsvm", [tmp_path / "tiny.svm"], verify=False)
    assert data.first_available(["tiny-libsvm", "ijcnn1-like"]) == "tiny-libsvm"
