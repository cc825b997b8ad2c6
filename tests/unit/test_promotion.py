"""The promotion gate: a challenger replaces the champion only by the margin and only when the paired
bootstrap interval of the difference on the same holdout lies above 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from mmops.promotion import METRICS, paired_bootstrap
from mmops.tasks import task_of

CLASSIFY, DETECT = task_of("classification").decisions, task_of("anomaly").decisions  # the task kinds' answers


def _probs(y: np.ndarray, right: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Probabilities whose top class is y where `right`, another class elsewhere."""
    p = rng.dirichlet(np.ones(k), len(y)) * 0.5
    top = np.where(right, y, (y + 1 + rng.integers(0, k - 1, len(y))) % k)
    p[np.arange(len(y)), top] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def test_the_gate_scores_as_scikit_learn_does() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        y = rng.integers(0, k, 300)
        p = _probs(y, rng.random(300) < 0.7, k, rng)
        assert METRICS["accuracy"](y, p, CLASSIFY) == pytest.approx(accuracy_score(y, p.argmax(1)))
        assert METRICS["macro_f1"](y, p, CLASSIFY) == pytest.approx(f1_score(y, p.argmax(1), average="macro",
                                                                   labels=list(range(k)), zero_division=0))
        want = roc_auc_score(y, p[:, 1]) if k == 2 else roc_auc_score(y, p, multi_class="ovr", average="macro")
        assert METRICS["auroc"](y, p, CLASSIFY) == pytest.approx(want)
    y = rng.integers(0, 2, 200)
    scores = rng.normal(size=200) + y  # an anomaly detector's scaled scores (1.0: the threshold)
    assert METRICS["auroc"](y, scores, DETECT) == pytest.approx(roc_auc_score(y, scores))
    assert METRICS["accuracy"](y, scores, DETECT) == pytest.approx(((scores > 1.0) == y).mean())


def test_a_clear_win_is_promoted_and_a_tie_a_lucky_win_or_a_win_under_the_margin_is_not() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    base = rng.random(300) < 0.6
    champion = _probs(y, base, 3, rng)
    better = _probs(y, base | (rng.random(300) < 0.6), 3, rng)  # right wherever the champion is, and more
    clear = paired_bootstrap("macro_f1", y, better, champion, CLASSIFY, 1000, 0.95, seed=0)
    assert clear.delta > 0.15 and clear.low is not None and clear.low > 0 and clear.decide(0.05)[0]
    assert not clear.decide(0.5)[0] and "not by the margin 0.5" in clear.decide(0.5)[1]
    tie = paired_bootstrap("macro_f1", y, champion, champion, CLASSIFY)
    assert tie.delta == 0 and not tie.decide(0.0)[0] and "no better" in tie.decide(0.0)[1]
    # one more record right of 40: better on paper, not something 40 records can tell from chance
    y40 = y[:40]
    right = base[:40].copy()
    one_more = right.copy()
    one_more[np.flatnonzero(~right)[0]] = True
    lucky = paired_bootstrap("accuracy", y40, _probs(y40, one_more, 3, rng), _probs(y40, right, 3, rng), CLASSIFY)
    assert lucky.delta == pytest.approx(1 / 40) and lucky.low is not None and lucky.low <= 0
    promoted, why = lucky.decide(0.0)
    assert not promoted and "cannot tell from chance" in why and "1000 resamples of 40 records" in why


def test_pairing_narrows_the_interval() -> None:
    """Both models are wrong on the same hard records: resampled together, their errors cancel."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    hard = rng.random(200) < 0.3
    champion = _probs(y, ~hard, 2, rng)
    fixed = np.flatnonzero(hard)[:10]
    better = champion.copy()
    better[fixed] = _probs(y[fixed], np.ones(10, bool), 2, rng)
    paired = paired_bootstrap("accuracy", y, better, champion, CLASSIFY)
    draws = np.random.default_rng(0).integers(0, 200, (1000, 2, 200))  # unpaired: independent draws
    accuracy = METRICS["accuracy"]
    unpaired = np.percentile([accuracy(y[a], better[a], CLASSIFY) - accuracy(y[b], champion[b], CLASSIFY)
                              for a, b in draws], [2.5, 97.5])
    assert paired.low is not None and paired.high is not None
    assert paired.low > 0 and unpaired[0] < 0  # the same 10 fixed records: only the paired test sees it
    assert paired.high - paired.low < (unpaired[1] - unpaired[0]) / 2


@pytest.mark.catalog
def test_the_decision_and_its_interval_are_kept(project: Path) -> None:
    from mmops.catalog import session_scope
    from mmops.registry import describe, get_alias, register
    from tests.unit.test_registry_catalog import _run

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 100)
    champion = _probs(y, rng.random(100) < 0.7, 2, rng)
    with session_scope() as s:
        register(s, _run(s, "a"), {"macro_f1": METRICS["macro_f1"](y, champion, CLASSIFY)})
        same = paired_bootstrap("macro_f1", y, champion, champion, CLASSIFY)
        tie = register(s, _run(s, "b"), {"macro_f1": same.challenger}, champion_metrics={"macro_f1": same.champion},
                       holdout="ds", comparison=same)
        assert not tie.promoted and get_alias(s, "security", "champion").version == 1
        better = _probs(y, np.ones(100, bool), 2, rng)
        win = paired_bootstrap("macro_f1", y, better, champion, CLASSIFY)
        r = register(s, _run(s, "c"), {"macro_f1": win.challenger}, champion_metrics={"macro_f1": win.champion},
                     holdout="ds", comparison=win)
        assert r.promoted and get_alias(s, "security", "champion").version == 3
        log = describe(s, "security")["audit_log"]
    assert log[0]["action"] == "promoted" and log[0]["interval"] == [win.low, win.high] and win.low > 0
    assert log[1]["action"] == "rejected" and log[1]["interval"] == [0.0, 0.0] and "no better" in log[1]["reason"]


@pytest.mark.catalog
def test_rollback_steps_back_one_champion_at_a_time_and_says_when_there_is_none(project: Path) -> None:
    from mmops.catalog import session_scope
    from mmops.errors import NotFoundError
    from mmops.registry import approval, describe, get_alias, register, rollback
    from tests.unit.test_registry_catalog import _run

    with session_scope() as s:
        for sha, f1 in (("a", 0.7), ("b", 0.8), ("c", 0.9)):
            assert register(s, _run(s, sha), {"macro_f1": f1}).promoted
        register(s, _run(s, "d"), {"macro_f1": 0.5})  # a challenger that lost: never a rollback target
        restored, replaced = rollback(s, "security", "oncall", "v3 misreads site B")
        assert (restored.version, replaced.version) == (2, 3) and get_alias(s, "security", "champion").version == 2
        assert rollback(s, "security", "oncall", "")[0].version == 1  # again: one further back, not to v3
        with pytest.raises(NotFoundError, match="replaced no earlier champion"):
            rollback(s, "security", "oncall", "")
        champion = get_alias(s, "security", "champion")
        assert champion is not None
        made = approval(s, "security", champion.id)
        log = describe(s, "security")["audit_log"]
    assert made is not None and made["decision"] == "rollback" and made["reason"] == "rollback from v2"
    assert [(e["action"], e["version"], e["previous_champion"]) for e in log[:2]] == [
        ("rollback", 1, 2), ("rollback", 2, 3)]
    assert log[1]["reason"] == "rollback from v3: v3 misreads site B" and log[1]["actor"] == "oncall"
