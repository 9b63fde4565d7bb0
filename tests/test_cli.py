"""The command line end to end: list, check, run, show, notebook, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from _runs import invoke
from hpo_bench.core.records import COLUMNS




def test_list_json(monkeypatch, capsys):
    code, out, _ = invoke(monkeypatch, capsys, "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"ridge", "ridge_per_feature", "seed_toy"} <= {t["name"] for t in data["tasks"]}
    assert {"gradient", "seed_notebook"} <= {t["name"] for t in data["tuners"]}
    assert {m["name"] for m in data["methods"]} >= {"exact", "cg", "neumann", "fixed_point", "identity", "reverse",
                                                   "truncated", "forward"}
    assert "quick" in {s["name"] for s in data["suites"]}
    code, out, _ = invoke(monkeypatch, capsys, "list")
    assert code == 0 and "Hypergradient methods" in out


def test_check_passes_and_reports_the_notebooks_formula(monkeypatch, capsys):
    code, out, _ = invoke(monkeypatch, capsys, "check", "--task", "seed_toy", "--task", "ridge_per_feature",
                          "--points", "2", "--quick", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert {r["task"] for r in rows} == {"seed_toy", "ridge_per_feature"}
    for r in rows:
        if r["method"] in ("exact", "cg"):
            assert r["verdict"] == "pass" and r["rel_error_ref"] <= 1e-8
        if r["method"] == "reference":
            assert r["rel_error_fd"] <= 1e-6
        if r["method"] == "identity":
            assert r["verdict"] == "approx" and r["rel_error_ref"] > 1
    code, out, _ = invoke(monkeypatch, capsys, "check", "--task", "seed_toy", "--method", "identity",
                          "--param", "per_weight=true", "--points", "1")
    assert code == 0 and "identity" in out and "approx" in out


def test_check_fails_when_exact_tolerance_is_impossible(monkeypatch, capsys):
    code, out, _ = invoke(monkeypatch, capsys, "check", "--task", "ridge", "--method", "cg", "--points", "1",
                          "--exact-tol", "0", "--json")
    data = json.loads(out)
    assert code == (1 if data["failed"] else 0)
    assert all(r["verdict"] in ("pass", "FAIL") for r in data["rows"])


def test_run_quick_then_show(monkeypatch, capsys, tmp_path):
    out_dir = tmp_path / "quick"
    code, out, _ = invoke(monkeypatch, capsys, "run", "quick", "--out", str(out_dir))
    assert code == 0 and "records:" in out
    df = pd.read_parquet(out_dir / "records.parquet")
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert (df["status"] == "ok").all()
    assert df["cell_id"].nunique() == len(list((out_dir / "cells").glob("*.parquet")))
    prov = json.loads((out_dir / "provenance.json").read_text())
    for key in ("packages", "git_commit", "torch_threads", "dtype", "device", "command", "suite_sha256"):
        assert key in prov
    grad_rows = df[df["tuner"] == "gradient"]
    exact_rows = grad_rows[grad_rows["tuner_label"] == "exact"]
    assert exact_rows["hypergrad_rel_error"].max() <= 1e-8
    code, out, _ = invoke(monkeypatch, capsys, "show", str(out_dir))
    assert code == 0 and "incumbent" in out  # the summary shows each cell's incumbent
    assert f"cell time ({df['cell_id'].nunique()} cells)" in out and "harness" in out
    from hpo_bench.analysis.summary import final_rows, time_breakdown

    t = time_breakdown(df)
    fin = final_rows(df)
    assert t["wall_s"] == pytest.approx(fin["wall_s"].sum()) and t["tuner_s"] == pytest.approx(fin["time_s"].sum())
    assert t["harness_s"] >= 0 and t["tuner_s"] > 0 and t["measure_s"] > 0  # three disjoint parts of wall time


def test_notebook_command(monkeypatch, capsys):
    code, out, _ = invoke(monkeypatch, capsys, "notebook", "--json")
    assert code == 0
    data = json.loads(out)
    assert all(r["match"] for r in data["replay"])
    assert data["diagnosis"]["notebook_fixed_point"] < 0


@pytest.mark.parametrize("args, fragment", [
    (("check", "--task", "nope"), "unknown task 'nope'; known tasks: "),
    (("check", "--method", "magic"), "unknown hypergradient method 'magic'; known hypergradient methods: "),
    (("check", "--task", "ridge", "--param", "p=-1"), "parameter `p` must be an integer >= 1"),
    (("check", "--task", "ridge", "--param", "lam_low=-1"), "needs `low > 0`"),
    (("check", "--task", "ridge", "--param", "lam_low=10", "--param", "lam_high=1"), "`low < high` must hold"),
    (("check", "--points", "0"), "--points must be >= 1"),
    (("run", "nope", "--out", "x"), "unknown suite 'nope'; named suites: "),
    (("run", "missing.toml", "--out", "x"), "does not exist"),
    (("run",), "Missing argument"),
    (("frobnicate",), "No such command"),
    (("show", "/nonexistent"), "not found"),
])
def test_bad_input_is_one_line_exit_2(monkeypatch, capsys, args, fragment):
    code, out, err = invoke(monkeypatch, capsys, *args)
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("hpo-bench: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err + out


def test_malformed_suite_file(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('seeds = [0]\n[[task]]\nname = "ridge"\n[[tuner]]\nname = "gradient"\nparams = { outer = "nadam" }\n')
    code, _, err = invoke(monkeypatch, capsys, "run", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and str(bad) in err and "tuner[0].params" in err and "outer" in err


def test_console_script_exit_code(tmp_path):
    exe = [sys.executable, "-m", "hpo_bench.cli"]
    res = subprocess.run([*exe, "check", "--task", "nope"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


@pytest.mark.parametrize("args", [[], ["sweep"]])
def test_no_arguments_print_the_help_once(args):
    res = subprocess.run([sys.executable, "-m", "hpo_bench.cli", *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert (res.stdout + res.stderr).count("Usage:") == 1
