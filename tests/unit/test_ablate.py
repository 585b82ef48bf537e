"""The mini Table 2's assembly: one row per method from each method's own evaluation."""
import pyarrow as pa

from flows.ablate import TABLE2_METHODS, table2
from progra_core.schemas import EVAL_RESULTS
from storage import Catalog, DatasetStore


def _results(method, model_ref, passed):
    """Next-call rows (category call) and one BFCL base entry for one model."""
    rows = [{"model_ref": model_ref, "method": method, "model": model_ref, "prompt": "bfcl", "benchmark": "next_call",
             "category": "call", "entry_id": f"c{i}", "trial": 0, "passed": p, "valid_call": True,
             "right_function": p or i == 0, "turn_passed": [], "steps": []} for i, p in enumerate(passed)]
    rows.append({"model_ref": model_ref, "method": method, "model": model_ref, "prompt": "bfcl", "benchmark": "bfcl",
                 "category": "base", "entry_id": "e0", "trial": 0, "passed": False, "turn_passed": [True, False],
                 "steps": []})
    return pa.Table.from_pylist(rows, schema=EVAL_RESULTS)


def test_table2_has_a_row_per_method_with_its_own_numbers(tmp_path):
    store = DatasetStore(tmp_path)
    evals = {"base": store.write("eval_results", _results("progra", "base", [False] * 4), dataset_id="e-base").dataset_id,
             "sft": store.write("eval_results", _results("sft", "m1", [True, False, False, False]),
                                dataset_id="e-sft").dataset_id,
             "progra": store.write("eval_results", _results("progra", "m2", [True, True, False, False]),
                                   dataset_id="e-progra").dataset_id}
    headers, rows = table2(Catalog(tmp_path), evals)
    assert headers[:2] == ["Method", "Trained as"] and "Next: exact" in headers and "Turn acc." in headers
    by = {r[0]: dict(zip(headers, r, strict=True)) for r in rows}
    assert list(by) == ["base", "sft", "progra"]
    assert [by[m]["Next: exact"] for m in by] == ["0.00", "25.00", "50.00"]
    assert [by[m]["Next: func"] for m in by] == ["25.00", "25.00", "50.00"]
    assert by["sft"]["Trained as"] == "sft" and by["base"]["Turn acc."] == "50.00"
    from progra_core.methods import recipe

    for m in TABLE2_METHODS:  # every row make ablate trains is a method the pipeline knows how to train
        if m != "base":
            assert recipe(m).name == m
