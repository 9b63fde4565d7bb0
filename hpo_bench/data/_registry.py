"""The dataset registry: what each dataset is, where it comes from, how it is checked and split.

An entry (:class:`DatasetEntry`) records its source files (URL, checksum, size), its format, its
shape (``n``, ``p``, classes, dense or sparse), its canonical split rule, its licence and its
citation. Built-in entries cover the LIBSVM binary sets of the hypergradient literature, MNIST and
Fashion-MNIST (idx files), 20 Newsgroups (vectorised), every dataset bundled with scikit-learn, and
synthetic stand-ins of the large sets (``ijcnn1-like``, ...) for machines without internet.

Checksums are pooch-style strings (``"sha256:..."``, ``"md5:..."``). ``None`` means no checksum is
documented by the source: such files are fetched or imported only with ``verify=False``
(``--no-verify``), and the cache records that they were not verified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ._errors import UnknownDatasetError

__all__ = ["SourceFile", "DatasetEntry", "SPLIT_RULES", "FORMATS", "register", "unregister", "get", "names",
           "entries"]

#: How each format is read (``hpo_bench.data._formats``).
FORMATS = ("libsvm", "idx", "parquet", "sklearn", "20news", "synthetic")

#: The canonical split rules. Every rule draws from ``numpy.random.default_rng(seed)``, so the split
#: depends on the seed only (not on the machine or the order datasets were loaded).
SPLIT_RULES = {
    "permute-50-25-25": "all rows permuted by the seed; the first n // 2 train, the next n // 4 validation, "
                        "the rest test",
    "official-test-val20": "the official test file is the test split (its rows permuted by the seed); the "
                           "training file's rows are permuted by the seed, the last n // 5 are validation and "
                           "the rest train",
}


@dataclass(frozen=True)
class SourceFile:
    """One file of a dataset as its source publishes it.

    Attributes:
        name: the file name in the cache (and the name ``hpo-bench data import`` matches).
        url: where ``fetch`` downloads it.
        checksum: ``"sha256:<hex>"`` or ``"md5:<hex>"``; ``None`` when the source documents none.
        size: bytes, where known (shown by ``hpo-bench data list``; the checksum is what is enforced).
        role: ``"train"``/``"test"`` (libsvm, parquet), ``"train-images"``, ``"train-labels"``,
            ``"test-images"``, ``"test-labels"`` (idx), ``"archive"`` (20news).
    """

    name: str
    url: str
    checksum: str | None
    size: int | None = None
    role: str = "train"


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset.

    Attributes:
        name: the registry name (``dataset = "..."`` in a task's params).
        title: one line saying what the data are.
        format: one of :data:`FORMATS`.
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        n: rows of the training file (all rows where there is no official test file).
        n_test: rows of the official test file (0: none).
        p: features.
        n_classes: classes (0 for regression).
        sparse: whether ``X`` is held as ``scipy.sparse.csr_matrix`` (else a dense ndarray).
        density: the fraction of non-zero entries of ``X`` (nominal; ``None`` where unknown).
        split: a key of :data:`SPLIT_RULES`.
        files: the source files (none for bundled and synthetic sets).
        licence, citation, homepage: for the data page and for papers.
        synthetic: True for generated stand-ins (every table must say "synthetic stand-in").
        stand_in_for: the real dataset a stand-in imitates.
        loader: the scikit-learn ``load_*`` function (``format = "sklearn"``).
        target: the label column (``format = "parquet"``).
        zero_based: libsvm feature indices start at 0 (LIBSVM's own files are 1-based).
        positive_fraction: share of the positive class (binary stand-ins draw labels to match it).
        n_targets: columns of ``y`` (1: a vector; more for multi-output regression such as linnerud).
    """

    name: str
    title: str
    format: str
    task: str
    n: int
    p: int
    n_classes: int
    sparse: bool
    density: float | None
    split: str
    files: tuple[SourceFile, ...] = ()
    n_test: int = 0
    licence: str = ""
    citation: str = ""
    homepage: str = ""
    synthetic: bool = False
    stand_in_for: str | None = None
    loader: str | None = None
    target: str | None = None
    zero_based: bool = False
    positive_fraction: float | None = None
    n_targets: int = 1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"`format` must be one of {list(FORMATS)}, but got {self.format!r} (dataset {self.name!r})")
        if self.split not in SPLIT_RULES:
            raise ValueError(f"`split` must be one of {list(SPLIT_RULES)}, but got {self.split!r} "
                             f"(dataset {self.name!r})")
        if self.task not in ("binary", "multiclass", "regression"):
            raise ValueError(f"`task` must be one of ['binary', 'multiclass', 'regression'], but got {self.task!r} "
                             f"(dataset {self.name!r})")
        if self.split == "official-test-val20" and not self.synthetic and not any(
                f.role.startswith("test") for f in self.files) and self.format not in ("20news",):
            raise ValueError(f"split 'official-test-val20' needs a test file, but dataset {self.name!r} has none")

    @property
    def kind(self) -> str:
        """``"synthetic stand-in"``, ``"bundled"`` (ships with scikit-learn) or ``"download"``."""
        if self.synthetic:
            return "synthetic stand-in"
        return "bundled" if self.format == "sklearn" else "download"

    @property
    def size(self) -> int | None:
        """Total bytes of the source files, ``None`` if any size is unknown (0 for bundled and synthetic sets)."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(sizes)

    @property
    def verifiable(self) -> bool:
        """Every source file has a registered checksum."""
        return all(f.checksum is not None for f in self.files)

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows of all splits, features)``."""
        return self.n + self.n_test, self.p

    def label(self) -> str:
        """The name as tables should print it: stand-ins say so (``"ijcnn1-like (synthetic stand-in)"``)."""
        return f"{self.name} (synthetic stand-in)" if self.synthetic else self.name


_REGISTRY: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry, *, replace: bool = False) -> DatasetEntry:
    """Add ``entry`` to the registry; a second entry of the same name needs ``replace=True``."""
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"dataset {entry.name!r} is already registered (pass replace=True to replace it)")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (a no-op if absent)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> DatasetEntry:
    """The entry called ``name``, or :class:`UnknownDatasetError` listing the registered names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownDatasetError(f"unknown dataset {name!r}; known: {', '.join(names())}") from None


def names(*, task: str | None = None, synthetic: bool | None = None) -> list[str]:
    """Registered names in registration order, optionally only those of one ``task`` / kind."""
    return [e.name for e in entries(task=task, synthetic=synthetic)]


def entries(*, task: str | None = None, synthetic: bool | None = None) -> list[DatasetEntry]:
    """Registered entries in registration order, optionally filtered."""
    return [e for e in _REGISTRY.values() if (task is None or e.task == task)
            and (synthetic is None or e.synthetic == synthetic)]


# ------------------------------------------------------------------ built-in entries
_LIBSVM = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/"
_LIBSVM_CITE = ("C.-C. Chang and C.-J. Lin, LIBSVM: a library for support vector machines, ACM Transactions on "
                "Intelligent Systems and Technology 2(3):27, 2011 (the LIBSVM data page)")
_LIBSVM_LICENCE = "no licence stated on the LIBSVM data page; see the original source"


def _libsvm(name: str, title: str, files: list[tuple[str, str]], *, n: int, p: int, density: float,
            n_test: int = 0, sparse: bool, citation: str, licence: str = _LIBSVM_LICENCE, task: str = "binary",
            positive_fraction: float | None = None) -> DatasetEntry:
    src = tuple(SourceFile(f, _LIBSVM + f"{'regression' if task == 'regression' else 'binary'}/{f}", None,
                           None, role) for f, role in files)
    return DatasetEntry(name=name, title=title, format="libsvm", task=task, n=n, n_test=n_test, p=p,
                        n_classes=2 if task == "binary" else 0, sparse=sparse, density=density,
                        split="official-test-val20" if n_test else "permute-50-25-25", files=src,
                        licence=licence, citation=f"{citation}; {_LIBSVM_CITE}",
                        homepage=_LIBSVM.rstrip("/") + ("/regression.html" if task == "regression" else
                                                        "/binary.html"),
                        positive_fraction=positive_fraction)


_BUILTIN = [
    _libsvm("ijcnn1", "IJCNN 2001 challenge (LIBSVM binary version), 22 features", [("ijcnn1.bz2", "train"),
            ("ijcnn1.t.bz2", "test")], n=49990, n_test=91701, p=22, density=0.59, sparse=False,
            positive_fraction=0.097,
            citation="D. Prokhorov, IJCNN 2001 neural network competition, slide presentation at IJCNN'01, 2001"),
    _libsvm("covtype.binary", "UCI forest cover type, class 2 vs rest (LIBSVM binary version)",
            [("covtype.libsvm.binary.bz2", "train")], n=581012, p=54, density=0.22, sparse=False,
            positive_fraction=0.488,
            licence="CC BY 4.0 (UCI Machine Learning Repository, original covertype data)",
            citation="J. A. Blackard and D. J. Dean, Comparative accuracies of artificial neural networks and "
                     "discriminant analysis in predicting forest cover types from cartographic variables, "
                     "Computers and Electronics in Agriculture 24(3):131-151, 1999; binary version: R. Collobert, "
                     "S. Bengio and Y. Bengio, A parallel mixture of SVMs for very large scale problems, Neural "
                     "Computation 14(5):1105-1114, 2002"),
    _libsvm("real-sim", "SRAA UseNet articles, real vs simulated (tf-idf, rows of unit norm)",
            [("real-sim.bz2", "train")], n=72309, p=20958, density=0.0024, sparse=True, positive_fraction=0.307,
            citation="A. McCallum, SRAA: Simulated/Real/Aviation/Auto UseNet data"),
    _libsvm("rcv1.binary", "Reuters RCV1 (LIBSVM binary training file: CCAT and ECAT vs GCAT and MCAT)",
            [("rcv1_train.binary.bz2", "train")], n=20242, p=47236, density=0.0016, sparse=True,
            positive_fraction=0.52,
            licence="Reuters Corpus Volume 1: research use under the Reuters/NIST agreement",
            citation="D. D. Lewis, Y. Yang, T. G. Rose and F. Li, RCV1: a new benchmark collection for text "
                     "categorization research, Journal of Machine Learning Research 5:361-397, 2004"),
    _libsvm("news20.binary", "20 Newsgroups, binary version of Keerthi and DeCoste (1.36 million features)",
            [("news20.binary.bz2", "train")], n=19996, p=1355191, density=0.00034, sparse=True,
            positive_fraction=0.5,
            citation="S. S. Keerthi and D. DeCoste, A modified finite Newton method for fast solution of large "
                     "scale linear SVMs, Journal of Machine Learning Research 6:341-361, 2005"),
    _libsvm("cadata", "California housing block groups (LIBSVM regression version, 8 features)",
            [("cadata", "train")], n=20640, p=8, density=1.0, sparse=False, task="regression",
            citation="R. K. Pace and R. Barry, Sparse spatial autoregressions, Statistics and Probability Letters "
                     "33(3):291-297, 1997"),
]


def _idx(name: str, title: str, base: str, sums: dict[str, str], sizes: dict[str, int], *, licence: str,
         citation: str, homepage: str) -> DatasetEntry:
    roles = {"train-images-idx3-ubyte.gz": "train-images", "train-labels-idx1-ubyte.gz": "train-labels",
             "t10k-images-idx3-ubyte.gz": "test-images", "t10k-labels-idx1-ubyte.gz": "test-labels"}
    files = tuple(SourceFile(f, base + f, f"md5:{sums[f]}", sizes[f], role) for f, role in roles.items())
    return DatasetEntry(name=name, title=title, format="idx", task="multiclass", n=60000, n_test=10000, p=784,
                        n_classes=10, sparse=False, density=0.19 if name == "mnist" else 0.5,
                        split="official-test-val20", files=files, licence=licence, citation=citation,
                        homepage=homepage)


_BUILTIN += [
    _idx("mnist", "MNIST handwritten digits, 28 x 28 grey levels (uint8)",
         "https://ossci-datasets.s3.amazonaws.com/mnist/",
         {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
          "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
          "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
          "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
         {"train-images-idx3-ubyte.gz": 9912422, "train-labels-idx1-ubyte.gz": 28881,
          "t10k-images-idx3-ubyte.gz": 1648877, "t10k-labels-idx1-ubyte.gz": 4542},
         licence="CC BY-SA 3.0 (Y. LeCun and C. Cortes)",
         citation="Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, Gradient-based learning applied to document "
                  "recognition, Proceedings of the IEEE 86(11):2278-2324, 1998",
         homepage="http://yann.lecun.com/exdb/mnist/"),
    _idx("fashion_mnist", "Fashion-MNIST Zalando article images, 28 x 28 grey levels (uint8)",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
         {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
          "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
          "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
          "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
         {"train-images-idx3-ubyte.gz": 26421880, "train-labels-idx1-ubyte.gz": 29515,
          "t10k-images-idx3-ubyte.gz": 4422102, "t10k-labels-idx1-ubyte.gz": 5148},
         licence="MIT (Zalando SE)",
         citation="H. Xiao, K. Rasul and R. Vollgraf, Fashion-MNIST: a novel image dataset for benchmarking "
                  "machine learning algorithms, arXiv:1708.07747, 2017",
         homepage="https://github.com/zalandoresearch/fashion-mnist"),
    DatasetEntry(name="news20", title="20 Newsgroups by date, word counts of the training vocabulary, rows of "
                 "unit norm (scikit-learn's vectorised recipe)", format="20news", task="multiclass", n=11314,
                 n_test=7532, p=130107, n_classes=20, sparse=True, density=None, split="official-test-val20",
                 files=(SourceFile("20news-bydate.tar.gz", "https://ndownloader.figshare.com/files/5975967",
                                   "sha256:8f1b2514ca22a5ade8fbb9cfa5727df95fa587f4c87b786e15c759fa66d95610",
                                   None, "archive"),),
                 licence="no licence stated; distributed by J. Rennie for research",
                 citation="K. Lang, NewsWeeder: learning to filter netnews, ICML 1995",
                 homepage="http://qwone.com/~jason/20Newsgroups/"),
]

_SKLEARN_CITE = "F. Pedregosa et al., Scikit-learn: machine learning in Python, JMLR 12:2825-2830, 2011"
_UCI = "CC BY 4.0 (UCI Machine Learning Repository); shipped with scikit-learn (BSD-3-Clause)"
_BUILTIN += [
    DatasetEntry(name=nm, title=title, format="sklearn", task=task, n=n, p=p, n_classes=k, sparse=False,
                 density=dens, split="permute-50-25-25", loader=f"load_{nm}", licence=lic,
                 n_targets=3 if nm == "linnerud" else 1,
                 citation=f"{cite}; {_SKLEARN_CITE}", homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html")
    for nm, title, task, n, p, k, dens, lic, cite in [
        ("diabetes", "diabetes progression after one year, 10 baseline variables", "regression", 442, 10, 0, 1.0,
         "shipped with scikit-learn (BSD-3-Clause)",
         "B. Efron, T. Hastie, I. Johnstone and R. Tibshirani, Least angle regression, Annals of Statistics "
         "32(2):407-499, 2004"),
        ("breast_cancer", "Wisconsin diagnostic breast cancer, 30 features", "binary", 569, 30, 2, 1.0, _UCI,
         "W. N. Street, W. H. Wolberg and O. L. Mangasarian, Nuclear feature extraction for breast tumor "
         "diagnosis, IS&T/SPIE 1993"),
        ("digits", "optical recognition of handwritten digits, 8 x 8 grey levels 0-16", "multiclass", 1797, 64, 10,
         None, _UCI, "E. Alpaydin and C. Kaynak, Optical recognition of handwritten digits, UCI 1998"),
        ("wine", "wine recognition, 13 chemical measurements, 3 cultivars", "multiclass", 178, 13, 3, 1.0, _UCI,
         "M. Forina et al., PARVUS, an extendible package for data exploration, classification and correlation, "
         "1988 (UCI wine data)"),
        ("iris", "Fisher's iris, 4 measurements, 3 species", "multiclass", 150, 4, 3, 1.0, _UCI,
         "R. A. Fisher, The use of multiple measurements in taxonomic problems, Annals of Eugenics 7(2):179-188, "
         "1936"),
        ("linnerud", "Linnerud exercise (3 inputs) vs physiological (3 targets) measurements, 20 men",
         "regression", 20, 3, 0, 1.0, "shipped with scikit-learn (BSD-3-Clause)",
         "M. Tenenhaus, La regression PLS: theorie et pratique, Technip, 1998"),
    ]
]

_STAND_INS = [("ijcnn1", "ijcnn1-like"), ("covtype.binary", "covtype-like"), ("real-sim", "real-sim-like"),
              ("rcv1.binary", "rcv1-like"), ("news20.binary", "news20-like"), ("mnist", "mnist-like"),
              ("fashion_mnist", "fashion_mnist-like"), ("cadata", "cadata-like")]

for _e in _BUILTIN:
    register(_e)
for _real, _name in _STAND_INS:
    _r = _REGISTRY[_real]
    register(dataclasses.replace(
        _r, name=_name, title=f"synthetic stand-in for {_real}: same shape, sparsity and classes, generated data",
        format="synthetic", files=(), synthetic=True, stand_in_for=_real, licence="BSD-3-Clause (generated by "
        "hpo-bench)", citation=f"none (generated); cite {_real} only for the shape it imitates", homepage=""))

# a generator rather than a stand-in: tasks that take ``dataset = "text-like"`` pass their own n, p and density
# (hpo_bench.data._synthetic.text_like); the entry's shape is what ``hpo-bench data load`` generates
register(DatasetEntry(
    name="text-like", title="synthetic bag-of-words data: Zipf feature frequencies, tf-idf values, rows of unit "
    "norm (generated; tasks set n, p and density)", format="synthetic", task="binary", n=20000, p=100000,
    n_classes=2, sparse=True, density=0.001, split="permute-50-25-25", synthetic=True,
    licence="BSD-3-Clause (generated by hpo-bench)", citation="none (generated)", extra={"generator": "text-like"}))
