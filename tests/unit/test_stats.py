"""Bootstrap intervals, the paired difference, the detectable difference and pass^k against
cases computed by hand."""
import math

import pytest

from progra_core.evaluation.stats import MDE_FACTOR, bootstrap, paired_bootstrap, pass_hat_k, pass_hat_ks


def test_pass_hat_k_by_hand():
    # three tasks, 3 trials: 3, 1 and 0 passes
    assert pass_hat_k([3, 1, 0], 3, 1) == pytest.approx(4 / 9)
    assert pass_hat_k([3, 1, 0], 3, 2) == pytest.approx((3 + 0 + 0) / (3 * 3))  # C(3,2)=3, C(1,2)=0
    assert pass_hat_k([3, 1, 0], 3, 3) == pytest.approx(1 / 3)
    assert pass_hat_ks({"a": [True, True, True], "b": [False, True, False], "c": [False] * 3}) == \
        pytest.approx({1: 4 / 9, 2: 1 / 3, 3: 1 / 3})
    assert pass_hat_ks({"a": [True, False], "b": [True, True]})[2] == pytest.approx(0.5)  # never above pass^1
    with pytest.raises(ValueError, match="k must be"):
        pass_hat_k([1], 3, 4)
    with pytest.raises(ValueError, match="different numbers of trials"):
        pass_hat_ks({"a": [True], "b": [True, False]})
    with pytest.raises(ValueError, match="more passes"):
        pass_hat_k([4], 3, 1)


def test_bootstrap_of_two_entries_by_hand():
    # one stratum, entries 0 and 1: a replicate's mean is 0, 0.5 or 1 with p = 1/4, 1/2, 1/4
    est = bootstrap([("base", "e0", 0.0), ("base", "e1", 1.0)], n_boot=20000)
    assert est.value == 0.5 and (est.low, est.high) == (0.0, 1.0)


def test_strata_keep_their_size_and_trials_stay_with_their_entry():
    # every entry constant within its stratum: no sampling error at all, Overall = mean of the strata
    rows = [("base", f"b{i}", 1.0) for i in range(5)] + [("miss_func", f"m{i}", 0.0) for i in range(50)]
    est = bootstrap(rows)
    assert (est.value, est.low, est.high) == (0.5, 0.5, 0.5)
    # an entry's two trials (1 and 0) are one unit worth 0.5: the interval has no spread
    est = bootstrap([("base", "e0", 1.0), ("base", "e0", 0.0), ("base", "e1", 1.0), ("base", "e1", 0.0)])
    assert (est.value, est.low, est.high) == (0.5, 0.5, 0.5)


def test_pairing_cancels_what_the_entries_share():
    a = [("base", f"e{i}", float(i % 2)) for i in range(40)]
    b = [("base", f"e{i}", float(i % 2) + 0.25) for i in range(40)]  # every entry 0.25 better
    p = paired_bootstrap(a, b)
    assert p.entries == 40
    assert p.a.high - p.a.low > 0.2  # each run alone is uncertain ...
    assert (p.diff.value, p.diff.low, p.diff.high) == pytest.approx((0.25, 0.25, 0.25))  # ... their difference is not
    assert p.mde == pytest.approx(0.0, abs=1e-12)


def test_detectable_difference_and_unpaired_entries():
    # differences 0 and 1 on two entries: replicate mean diff in {0, .5, 1}, sd = sqrt(1/8)
    a = [("base", "e0", 0.0), ("base", "e1", 0.0), ("base", "only_a", 1.0)]
    b = [("base", "e0", 0.0), ("base", "e1", 1.0), ("miss_func", "only_b", 1.0)]
    p = paired_bootstrap(a, b, n_boot=40000)
    assert p.entries == 2  # entries one run did not score are left out
    assert p.diff.value == 0.5 and (p.diff.low, p.diff.high) == (0.0, 1.0)
    assert p.mde == pytest.approx(MDE_FACTOR * math.sqrt(1 / 8), rel=0.03)
    with pytest.raises(ValueError, match="share no entry"):
        paired_bootstrap([("base", "x", 1.0)], [("base", "y", 1.0)])


def test_paired_table_rows_from_eval_results():
    from progra_core.evaluation.report import paired

    def rows(passed_base, passed_next, retail):
        out = [{"benchmark": "bfcl", "category": "base", "entry_id": f"b{i}", "trial": 0, "passed": p,
                "turn_passed": [True, p, p, False]} for i, p in enumerate(passed_base)]
        out += [{"benchmark": "next_call", "category": "call", "entry_id": f"n{i}", "trial": 0, "passed": p}
                for i, p in enumerate(passed_next)]
        out += [{"benchmark": "tau2", "category": "retail", "entry_id": t, "trial": k, "passed": p}
                for t, ps in retail.items() for k, p in enumerate(ps)]
        return out

    a = rows([False, False], [False] * 4, {"t1": [True, False], "t2": [False, False]})
    b = rows([True, True], [True, True, False, False], {"t1": [True, True], "t2": [True, False]})
    headers, body = paired(a, b, ("base", "trained"))
    by = {r[0]: dict(zip(headers, r, strict=True)) for r in body}
    assert headers[3] == "Δ (trained − base)"
    assert by["Overall"]["base"] == "0.0 [0.0, 0.0]" and by["Base"]["trained"] == "100.0 [100.0, 100.0]"
    assert by["Next: exact"]["Δ (trained − base)"].startswith("+50.0 [") and by["Next: exact"]["Entries"] == "4"
    turns = by["BFCL turn acc. (mean per entry)"]  # 1 of 4 turns per entry, then 3 of 4
    assert (turns["base"], turns["trained"], turns["Entries"]) == ("25.0 [25.0, 25.0]", "75.0 [75.0, 75.0]", "2")
    assert by["Retail"]["Entries"] == "2" and "Next: ends turn" not in by  # no turn-end cases in these runs
    assert (by["Retail pass^1"]["base"], by["Retail pass^1"]["trained"]) == ("25.0", "75.0")
    assert (by["Retail pass^2"]["base"], by["Retail pass^2"]["trained"]) == ("0.0", "50.0")
